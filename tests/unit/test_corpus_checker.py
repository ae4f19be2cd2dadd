"""The plain-Python checker (`cartflow contracts check`) on the whole corpus, as one batch."""

from __future__ import annotations

import re
import time

from spark.jobs.contracts import load_contracts
from spark.jobs.rowcheck import check_files
from tests.corpus_expect import Outcome, corpus_files, expected, mismatches, relative


def checker_outcomes() -> dict[str, Outcome]:
    reports = check_files(corpus_files(), load_contracts())
    return {
        relative(r.path): Outcome(
            outcome=r.outcome,
            reason=r.reason,
            valid_rows=r.valid_rows,
            quarantined={q.line: [v.message for v in q.violations] for q in r.quarantined},
        )
        for r in reports
    }


def test_corpus_is_large_and_covers_every_outcome() -> None:
    outcomes = [e["outcome"] for e in expected().values()]
    assert len(outcomes) >= 40
    assert {o: outcomes.count(o) >= 10 for o in ("accepted", "quarantined", "rejected")} == {
        "accepted": True,
        "quarantined": True,
        "rejected": True,
    }


def test_checker_matches_every_expected_outcome_reason_and_line() -> None:
    started = time.perf_counter()
    actual = checker_outcomes()
    elapsed = time.perf_counter() - started
    assert mismatches(actual) == []
    print(f"\ncorpus: {len(actual)} files checked in plain Python in {elapsed:.2f}s")


FILE_REASONS = [
    r"file is empty \(0 bytes\)",
    r"file is gzip-compressed but named \.csv: rename it to \.csv\.gz",
    r"file is (zip|bzip2|xz|zstd)-compressed, not CSV text: (unzip|decompress) it and upload the \.csv \(or gzip .+ as \.csv\.gz\)",
    r"file is named \.gz but is not gzip-compressed: rename it to \.csv \(or compress it with gzip\)",
    r"gzip data is truncated \(incomplete upload\?\): upload the whole \.csv\.gz again",
    r"file is gzip-compressed (zip|bzip2|xz|zstd) data, not CSV text: gzip the \.csv itself \(gzip file\.csv\)",
    r'file is UTF-16 encoded, not UTF-8: save it as UTF-8 \(in Excel: "CSV UTF-8 \(Comma delimited\)"\)',
    r"binary content: byte 0x[0-9a-f]{2} at offset \d+",
    r"not valid UTF-8: byte 0x[0-9a-f]{2} at offset \d+ \(line \d+\)",
    r"first line is blank: no header row",
    r"wrong delimiter: header splits on '(;|\\t|\|)' into \d+ columns; expected ','",
    r"header repeats column\(s\) [a-z_, ]+",
    r"header is missing column\(s\) [a-z_, ]+( and has unexpected column\(s\) .+ \(renamed\?\))?",
    r"header has unexpected column\(s\) .+",
    r"file has a header but no data rows",
    r"file ends inside a quoted field opened on line \d+",
    r"last line is truncated: \d+ of \d+ fields and no final newline",
    r"duplicate of \S+\.csv (in this batch|accepted in batch \S+) \(same sha256\)",
]


def test_every_reason_is_specific() -> None:
    """File reasons name the problem and where; row reasons start with the column they are about."""
    contracts = load_contracts()
    for name, outcome in checker_outcomes().items():
        if outcome.reason is not None:
            assert any(re.fullmatch(p, outcome.reason) for p in FILE_REASONS), (name, outcome.reason)
            continue
        contract = contracts[name.split("/")[0]]
        subjects = {*contract.column_names, ",".join(contract.key), "malformed row"}
        for messages in outcome.quarantined.values():
            for message in messages:
                assert message.split(":")[0] in subjects, (name, message)
