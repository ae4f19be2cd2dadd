"""Read models for people: batches, per-file state, KPI tables; and uploading a folder."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cartflow.core.batch_table import BatchTable, Chunk
from cartflow.core.deps import Deps, scan_items
from cartflow.core.models import RAW_PREFIX, VALIDATION_OUTPUT_PREFIX, BatchStatus, FileOutcome, ValidationResult

# State of a raw file, derived from its event, its batch and the batch's file outcomes
# (one source of truth each).
FILE_STATE = {
    BatchStatus.PENDING.value: "batched (pending)",
    BatchStatus.PROCESSING.value: "processing",
    BatchStatus.DONE.value: "archived",
    BatchStatus.FAILED.value: "failed (kept in raw/)",
}
ARCHIVED = "archived"
REJECTED = "rejected"  # at ingest (bad key) or by validation (bad file): archived under rejected/

TERMINAL_FILE_STATES = frozenset({ARCHIVED, "failed (kept in raw/)", REJECTED})


@dataclass(frozen=True)
class FileState:
    s3_path: str
    group_key: str
    state: str
    batch_id: str | None
    reason: str | None
    quarantined_rows: int | None = None  # known once the batch is done
    arrived_at: float | None = None  # the upload's S3 event time (epoch seconds)


def outcomes_of(chunk: Chunk) -> dict[str, FileOutcome]:
    """The validation's per-file outcomes recorded on a done chunk (empty before)."""
    if not chunk.file_outcomes:
        return {}
    return {o.uri: o for o in (FileOutcome.model_validate(d) for d in json.loads(chunk.file_outcomes))}


def scan(deps: Deps, table: str) -> list[dict[str, Any]]:
    return scan_items(deps.clients.dynamodb, table)


def batches(deps: Deps) -> list[Chunk]:
    return BatchTable(deps).all()


def files(deps: Deps, known_batches: list[Chunk] | None = None) -> list[FileState]:
    chunks = {c.batch_id: c for c in (batches(deps) if known_batches is None else known_batches)}
    out = []
    outcomes: dict[str, dict[str, FileOutcome]] = {}
    for e in scan(deps, deps.settings.events_table):
        batch_id = e.get("batch_id")
        quarantined: int | None = None
        if e.get("status") == "rejected":
            state, reason = "rejected", e.get("reason")
        elif batch_id and batch_id in chunks:
            chunk = chunks[batch_id]
            state, reason = FILE_STATE[chunk.status], chunk.error
            outcome = outcomes.setdefault(batch_id, outcomes_of(chunk)).get(e["s3_path"])
            if outcome is not None and outcome.status == "rejected":
                state, reason = REJECTED, outcome.reason
            elif outcome is not None:
                quarantined = outcome.quarantined_rows
        else:
            state, reason = "waiting (debounce)", None
        arrived = float(e["arrival_timestamp"]) if "arrival_timestamp" in e else None
        out.append(FileState(e["s3_path"], e["group_key"], state, batch_id, reason, quarantined, arrived))
    return sorted(out, key=lambda f: (f.group_key, f.s3_path))


def is_settled(deps: Deps, expected_files: int) -> bool:
    """At least `expected_files` files seen, each in a terminal state, and no batch in flight."""
    chunks = batches(deps)
    fs = files(deps, chunks)
    if len(fs) < expected_files or any(f.state not in TERMINAL_FILE_STATES for f in fs):
        return False
    return all(b.status in (BatchStatus.DONE.value, BatchStatus.FAILED.value) for b in chunks)


def order_kpis(deps: Deps) -> list[dict[str, Any]]:
    return sorted(scan(deps, deps.settings.order_kpis_table), key=lambda r: r["order_date"])


def category_kpis(deps: Deps) -> list[dict[str, Any]]:
    return sorted(scan(deps, deps.settings.category_kpis_table), key=lambda r: (r["order_date"], r["category"]))


def upload_dir(deps: Deps, root: Path) -> list[str]:
    """Upload every CSV under root to raw/, keeping the relative path (root/orders/x.csv -> raw/orders/x.csv)."""
    keys = []
    for path in sorted(root.rglob("*.csv")):
        key = RAW_PREFIX + path.relative_to(root).as_posix()
        deps.clients.s3.upload_file(str(path), deps.settings.bucket, key)
        keys.append(key)
    return keys


BATCH_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def validation_result(deps: Deps, batch_id: str) -> ValidationResult | None:
    """validation_output/<batch_id>.json, or None if the batch has not been validated (yet)."""
    if not BATCH_ID_RE.match(batch_id):
        raise ValueError(f"not a batch id: {batch_id!r} (expected [A-Za-z0-9_-], at most 80 characters)")
    s3 = deps.clients.s3
    try:
        body = s3.get_object(Bucket=deps.settings.bucket, Key=f"{VALIDATION_OUTPUT_PREFIX}{batch_id}.json")["Body"]
    except s3.exceptions.NoSuchKey:
        return None
    return ValidationResult.model_validate_json(body.read())


# ----------------------------------------------------------------------------- audit ledger


@dataclass(frozen=True)
class LedgerRow:
    """One upload of one raw file and the single state it is in."""

    s3_path: str
    arrived_at: float | None
    outcome: str  # processed | rejected | failed | in progress
    batch_id: str | None
    detail: str  # e.g. "processed in batch X, 3 quarantined rows" / "rejected: <reason>"


def ledger(deps: Deps) -> list[LedgerRow]:
    """Every upload the events table remembers (event_retention_days after it ended) and its state."""
    rows = []
    for f in files(deps):
        if f.state == ARCHIVED:
            n = f.quarantined_rows
            quarantined = "" if n is None else f", {n} quarantined row{'s' if n != 1 else ''}"
            rows.append(
                LedgerRow(f.s3_path, f.arrived_at, "processed", f.batch_id, f"processed in batch {f.batch_id}{quarantined}")
            )
        elif f.state == REJECTED:
            rows.append(LedgerRow(f.s3_path, f.arrived_at, "rejected", f.batch_id, f"rejected: {f.reason}"))
        elif f.state == FILE_STATE[BatchStatus.FAILED.value]:
            rows.append(
                LedgerRow(
                    f.s3_path, f.arrived_at, "failed", f.batch_id, f"failed batch {f.batch_id}: {f.reason or 'no error recorded'}"
                )
            )
        else:
            since = "" if f.arrived_at is None else datetime.fromtimestamp(f.arrived_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            rows.append(LedgerRow(f.s3_path, f.arrived_at, "in progress", f.batch_id, f"in progress ({f.state}) since {since}"))
    return sorted(rows, key=lambda r: (r.arrived_at or 0.0, r.s3_path))
