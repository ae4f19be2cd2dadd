"""The malformed-input corpus (tests/corpus/) and its hand-written expectations.

Both the plain-Python checker (unit test) and the real Spark job (integration test) are
compared with ``expected.yaml`` through ``Outcome`` values, so a mismatch reads the same
way whichever side produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import yaml

CORPUS = Path(__file__).resolve().parent / "corpus"


@dataclass
class Outcome:
    """One file as a validator saw it: outcome, reason, valid rows, {line: [messages]}."""

    outcome: str
    reason: str | None = None
    valid_rows: int = 0
    quarantined: dict[int, list[str]] = field(default_factory=dict)


def corpus_files() -> list[tuple[str, Path]]:
    """(dataset, path) of every corpus CSV (.csv and .csv.gz), the folder naming the dataset as under raw/."""
    paths = [p for pattern in ("*/*.csv", "*/*.csv.gz") for p in CORPUS.glob(pattern)]
    return [(p.parent.name, p) for p in sorted(paths)]


def relative(path: str | Path) -> str:
    """'.../tests/corpus/orders/x.csv', 's3://b/raw/orders/x.csv' or a percent-encoded file:// URI
    ('.../orders/a%20b.csv', what Path.as_uri() gives) -> 'orders/x.csv' / 'orders/a b.csv'."""
    parts = str(path).replace("\\", "/").split("/")
    return unquote("/".join(parts[-2:]))


def expected() -> dict[str, dict[str, Any]]:
    return yaml.safe_load((CORPUS / "expected.yaml").read_text(encoding="utf-8"))["files"]


def mismatches(actual: dict[str, Outcome], to_relative: Any = relative) -> list[str]:
    """Every difference between ``actual`` (keyed by corpus-relative path) and expected.yaml."""
    problems = []
    want_all = expected()
    if set(actual) != set(want_all):
        problems.append(
            f"files differ: missing {sorted(set(want_all) - set(actual))}, extra {sorted(set(actual) - set(want_all))}"
        )
    for name in sorted(set(actual) & set(want_all)):
        got, want = actual[name], want_all[name]
        if got.outcome != want["outcome"]:
            problems.append(f"{name}: outcome {got.outcome} ({got.reason}), expected {want['outcome']}")
            continue
        if want["outcome"] == "rejected":
            reason = _relative_paths(got.reason or "", to_relative)
            if reason != want["reason"]:
                problems.append(f"{name}: reason {reason!r}, expected {want['reason']!r}")
            continue
        if got.valid_rows != want["valid_rows"]:
            problems.append(f"{name}: {got.valid_rows} valid rows, expected {want['valid_rows']}")
        lines = {q["line"]: q["reasons"] for q in want.get("quarantined", [])}
        if set(got.quarantined) != set(lines):
            problems.append(f"{name}: quarantined lines {sorted(got.quarantined)}, expected {sorted(lines)}")
            continue
        for line, prefixes in lines.items():
            messages = got.quarantined[line]
            unmatched = [p for p in prefixes if not any(m.startswith(p) for m in messages)]
            if unmatched or len(messages) != len(prefixes):
                problems.append(f"{name}:{line}: reasons {messages}, expected prefixes {prefixes}")
    return problems


def _relative_paths(reason: str, to_relative: Any) -> str:
    """'duplicate of s3://b/raw/orders/x.csv in ...' -> 'duplicate of orders/x.csv in ...'."""
    words = reason.split(" ")
    return " ".join(to_relative(w) if "/" in w and w.endswith((".csv", ".csv.gz")) else w for w in words)
