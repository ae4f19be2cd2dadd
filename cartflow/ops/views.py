"""Read models for people: batches, per-file state, KPI tables; and uploading a folder."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from cartflow.core.batch_table import BatchTable, Chunk
from cartflow.core.deps import Deps, scan_items
from cartflow.core.errors import APPLY_HINT, BadInput, describe_target, error_code
from cartflow.core.exceptions import InfraError
from cartflow.core.models import (
    BATCH_ID_RE,
    DELETED_REASON,
    RAW_PREFIX,
    VALIDATION_OUTPUT_PREFIX,
    BatchStatus,
    DataType,
    EventStatus,
    FileOutcome,
    ValidationResult,
)

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
SUPERSEDED = EventStatus.SUPERSEDED.value  # a later upload of the key replaced it before batching
DELETED = EventStatus.DELETED.value  # the key was deleted before its batch read it: nothing to archive

TERMINAL_FILE_STATES = frozenset({ARCHIVED, "failed (kept in raw/)", REJECTED, SUPERSEDED, DELETED})


@dataclass(frozen=True)
class FileState:
    s3_path: str
    group_key: str
    state: str
    batch_id: str | None
    reason: str | None
    quarantined_rows: int | None = None  # known once the batch is done
    arrived_at: float | None = None  # the upload's S3 event time (epoch seconds)
    version_id: str | None = None  # the upload's S3 version: several uploads of one key are told apart by it


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
        if e.get("status") == EventStatus.REMOVAL.value:
            continue  # a delete of a key, not an upload: its effect shows on the uploads it withdrew
        batch_id = e.get("batch_id")
        quarantined: int | None = None
        if e.get("status") in (REJECTED, SUPERSEDED, DELETED):
            state, reason = e["status"], e.get("reason")
        elif batch_id and batch_id in chunks:
            chunk = chunks[batch_id]
            state, reason = FILE_STATE[chunk.status], chunk.error
            outcome = outcomes.setdefault(batch_id, outcomes_of(chunk)).get(e["s3_path"])
            if outcome is not None and outcome.status == "rejected" and outcome.reason == DELETED_REASON:
                state, reason = DELETED, outcome.reason
            elif outcome is not None and outcome.status == "rejected":
                state, reason = REJECTED, outcome.reason
            elif outcome is not None:
                quarantined = outcome.quarantined_rows
        else:
            state, reason = "waiting (debounce)", None
        arrived = float(e["arrival_timestamp"]) if "arrival_timestamp" in e else None
        out.append(FileState(e["s3_path"], e["group_key"], state, batch_id, reason, quarantined, arrived, e.get("version_id")))
    return sorted(out, key=lambda f: (f.group_key, f.s3_path, f.arrived_at or 0.0))


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


SEED_LAYOUT = f"<dataset>/<file>.csv ({', '.join(t.value for t in DataType)})"


def seed_files(root: Path) -> list[tuple[Path, str]]:
    """The CSVs of a seed folder and their raw/ keys, or BadInput saying what is wrong with it.

    A seed folder holds ``<dataset>/<file>.csv`` (sub-folders below the dataset are kept);
    anything else would be rejected at ingest, so it is refused before anything is uploaded.
    """
    if not root.exists():
        raise BadInput(f"{root}: no such folder; give a folder with {SEED_LAYOUT}, e.g. fixtures/valid")
    if not root.is_dir():
        raise BadInput(f"{root}: not a folder; give a folder with {SEED_LAYOUT}, e.g. fixtures/valid")
    known = {t.value for t in DataType}
    csvs = sorted(p for p in root.rglob("*.csv") if p.is_file())
    stray = [p.relative_to(root) for p in csvs if len(p.relative_to(root).parts) < 2 or p.relative_to(root).parts[0] not in known]
    if stray:
        seed_folders = sorted({s.parts[0] for s in stray if len(s.parts) > 2 and s.parts[1] in known})
        hint = f"; did you mean one of its folders: {', '.join(str(root / f) for f in seed_folders)}?" if seed_folders else ""
        raise BadInput(
            f"{root}: {len(stray)} CSV file(s) not under a dataset folder (first: {stray[0].as_posix()}); "
            f"expected {SEED_LAYOUT}{hint}"
        )
    if not csvs:
        raise BadInput(f"{root}: no CSV files; expected {SEED_LAYOUT}")
    return [(p, RAW_PREFIX + p.relative_to(root).as_posix()) for p in csvs]


def upload_dir(deps: Deps, root: Path) -> list[str]:
    """Upload every CSV under root to raw/, keeping the relative path (root/orders/x.csv -> raw/orders/x.csv).

    BadInput for a folder that is not a seed folder, InfraError when the bucket is missing;
    both before anything is uploaded.
    """
    files = seed_files(root)
    bucket = deps.settings.bucket
    try:
        deps.clients.s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) not in {"404", "NoSuchBucket", "NotFound"}:
            raise
        raise InfraError(
            f"bucket {bucket} not found at {describe_target(deps.settings.aws_endpoint_url)}: {APPLY_HINT}"
        ) from None
    keys = []
    for path, key in files:
        deps.clients.s3.upload_file(str(path), bucket, key)
        keys.append(key)
    return keys


def jsonable(value: Any) -> Any:
    """A read model (dataclasses, pydantic models, DynamoDB Decimals) as plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return value


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
    outcome: str  # processed | rejected | superseded | deleted | failed | in progress
    batch_id: str | None
    detail: str  # e.g. "processed in batch X, 3 quarantined rows" / "rejected: <reason>"
    version_id: str | None = None


def ledger(deps: Deps) -> list[LedgerRow]:
    """Every upload the events table remembers (event_retention_days after it ended) and its state."""
    rows = []
    for f in files(deps):
        if f.state == ARCHIVED:
            n = f.quarantined_rows
            quarantined = "" if n is None else f", {n} quarantined row{'s' if n != 1 else ''}"
            outcome, detail = "processed", f"processed in batch {f.batch_id}{quarantined}"
        elif f.state in (REJECTED, SUPERSEDED, DELETED):
            outcome, detail = f.state, f"{f.state}: {f.reason}"
        elif f.state == FILE_STATE[BatchStatus.FAILED.value]:
            outcome, detail = "failed", f"failed batch {f.batch_id}: {f.reason or 'no error recorded'}"
        else:
            since = "" if f.arrived_at is None else datetime.fromtimestamp(f.arrived_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            outcome, detail = "in progress", f"in progress ({f.state}) since {since}"
        rows.append(LedgerRow(f.s3_path, f.arrived_at, outcome, f.batch_id, detail, f.version_id))
    return sorted(rows, key=lambda r: (r.arrived_at or 0.0, r.s3_path))


# ----------------------------------------------------------------------------- batch progress
# `cartflow demo` and `cartflow wait` print the live state of each batch with one renderer:
#   batch b-123: debouncing -> validating -> transforming -> archiving -> done (41 s)

DEBOUNCING = "debouncing"
WAITING = "waiting (debounce)"
TERMINAL_STEPS = frozenset({"done", "failed"})
# The state machine's states (orchestrator/state_machine.asl.json) as steps people read.
STEP_OF_STATE = {
    "CheckCurrent": "validating",
    "StageRawFiles": "staging",
    "Validate": "validating",
    "CheckValidation": "validating",
    "Transform": "transforming",
    "ArchiveRawFiles": "archiving",
    "DeleteRawFiles": "archiving",
    "MarkDone": "finishing",
    "ReleaseLock": "finishing",
    "NotifySuccess": "finishing",
    "NotCurrent": "finishing",
}


def batch_step(status: str, state: str | None = None) -> str:
    """The step of a batch: its chunk status, and while it runs the state machine's state."""
    if status == BatchStatus.DONE.value:
        return "done"
    if status == BatchStatus.FAILED.value:
        return "failed"
    if status == BatchStatus.PENDING.value:
        return "pending"
    if state is None:
        return "processing"
    if state in STEP_OF_STATE:
        return STEP_OF_STATE[state]
    # Nested job states of the AWS target (ValidateRunTask, TransformReadResult, ...).
    for prefix, step in (("Validate", "validating"), ("Transform", "transforming")):
        if state.startswith(prefix) and not state.endswith("Failed"):
            return step
    return "failing"  # the Catch path: NotifyFailure, MarkFailed, ...


def execution_state(deps: Deps, execution_arn: str | None) -> str | None:
    """The state an execution last entered (None when unknown: no execution yet, or no history)."""
    if not execution_arn:
        return None
    try:
        events = deps.clients.sfn.get_execution_history(executionArn=execution_arn, reverseOrder=True, maxResults=50)["events"]
    except ClientError:
        return None
    for event in events:
        if str(event.get("type", "")).endswith("StateEntered"):
            return str(event.get("stateEnteredEventDetails", {}).get("name")) or None
    return None


@dataclass
class BatchTrack:
    batch_id: str
    started: float  # epoch seconds: the earliest upload of its files
    steps: list[str]
    ended: float | None = None

    def line(self, now: float) -> str:
        end = self.ended if self.ended is not None else now
        return f"batch {self.batch_id}: {' -> '.join(self.steps)} ({max(0.0, end - self.started):.0f} s)"


class BatchProgress:
    """The steps each batch went through, as seen by successive snapshots (``observe``).

    Batches already settled at the first snapshot are not followed (``already_settled``
    counts them); every other batch starts at ``debouncing`` and its elapsed time runs
    from the first upload of its files until it is done or failed.
    """

    def __init__(self) -> None:
        self.tracks: dict[str, BatchTrack] = {}
        self.already_settled: set[str] = set()
        self.waiting: list[FileState] = []
        self._first = True

    def observe(
        self, chunks: list[Chunk], file_states: list[FileState], state_of: Any = None, now: float | None = None
    ) -> list[BatchTrack]:
        """Record one snapshot; returns the tracks whose step changed. ``state_of(chunk)`` gives the
        state-machine state of a processing chunk (None: unknown)."""
        now = datetime.now(UTC).timestamp() if now is None else now
        self.waiting = [f for f in file_states if f.state == WAITING]
        arrivals: dict[str, float] = {}
        for f in file_states:
            if f.batch_id and f.arrived_at is not None:
                arrivals[f.batch_id] = min(arrivals.get(f.batch_id, f.arrived_at), f.arrived_at)
        changed = []
        for chunk in sorted(chunks, key=lambda c: (c.created_at, c.batch_id)):
            terminal = chunk.status in (BatchStatus.DONE.value, BatchStatus.FAILED.value)
            if chunk.batch_id in self.already_settled or (self._first and terminal):
                self.already_settled.add(chunk.batch_id)
                continue
            state = state_of(chunk) if state_of is not None and chunk.status == BatchStatus.PROCESSING.value else None
            step = batch_step(chunk.status, state)
            track = self.tracks.get(chunk.batch_id)
            if track is None:
                started = arrivals.get(chunk.batch_id, chunk.created_at / 1000)
                track = self.tracks[chunk.batch_id] = BatchTrack(chunk.batch_id, started, [DEBOUNCING])
            if track.steps[-1] != step:
                track.steps.append(step)
                changed.append(track)
                if step in TERMINAL_STEPS:
                    track.ended = now
        self._first = False
        return changed

    def lines(self, now: float | None = None) -> list[str]:
        now = datetime.now(UTC).timestamp() if now is None else now
        out = [t.line(now) for t in self.tracks.values()]
        if self.waiting:
            first = min((f.arrived_at for f in self.waiting if f.arrived_at is not None), default=now)
            n = len(self.waiting)
            out.append(f"{DEBOUNCING}: {n} file{'s' if n != 1 else ''} not in a batch yet ({max(0.0, now - first):.0f} s)")
        return out

    def pending(self) -> list[str]:
        """What is not settled yet, one line each (for a timeout message)."""
        out = [f"batch {t.batch_id} ({t.steps[-1]})" for t in self.tracks.values() if t.steps[-1] not in TERMINAL_STEPS]
        out += [f"{f.s3_path} (waiting for its debounce window)" for f in self.waiting]
        return out


def uningested_keys(deps: Deps, known: list[FileState]) -> list[str]:
    """raw/ objects the events table has no item for yet (uploaded, ingest still to come)."""
    seen = {f.s3_path for f in known}
    bucket = deps.settings.bucket
    out = []
    for page in deps.clients.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=RAW_PREFIX):
        keys = (o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/"))  # folder markers
        out += [key for key in keys if f"s3://{bucket}/{key}" not in seen]
    return sorted(out)


def snapshot_settled(chunks: list[Chunk], file_states: list[FileState], expected_files: int = 0) -> bool:
    """``is_settled`` over a snapshot already read (the same rule, no second scan)."""
    if len(file_states) < expected_files or any(f.state not in TERMINAL_FILE_STATES for f in file_states):
        return False
    return all(b.status in (BatchStatus.DONE.value, BatchStatus.FAILED.value) for b in chunks)
