"""Operator actions on batches: list, retry a failed one, audit the exactly-once invariants.

Pure functions over ``Deps`` (the CLI in cartflow.cli.batches only formats their results), so
tests call them directly against the emulator.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from cartflow.core.batch_table import BatchTable, Chunk
from cartflow.core.deps import Deps, scan_items
from cartflow.core.errors import error_code
from cartflow.core.exceptions import CartflowError
from cartflow.core.models import (
    DELETED_REASON,
    PROCESSED_PREFIX,
    RAW_PREFIX,
    REJECTED_PREFIX,
    BatchStatus,
    EventStatus,
    RawFile,
)
from cartflow.ops.views import outcomes_of
from services.controller import START_GRACE_MS
from services.dispatch import execution_name
from services.notify import retry_command  # noqa: F401  re-exported for the CLI and tests


def list_batches(deps: Deps, status: BatchStatus | None = None) -> list[Chunk]:
    """Batches oldest first, optionally only those in one status (by_status index)."""
    table = BatchTable(deps)
    return table.by_status(status) if status else table.all()


def find_batch(deps: Deps, batch_id: str) -> Chunk | None:
    # The key is (group_key, batch_id) and an operator only knows the id: scan. Operator
    # commands are rare and the table holds chunks for `event_retention_days` at most.
    return next((c for c in BatchTable(deps).all() if c.batch_id == batch_id), None)


# ------------------------------------------------------------------------------- retry


class RetryRefused(CartflowError):
    """The batch cannot be retried now; the message says why and what to do."""


@dataclass(frozen=True)
class RetryResult:
    batch_id: str
    attempt: int
    execution_name: str  # the name the next execution will get
    previous_execution: str | None


def source_exists(deps: Deps, chunk: Chunk, uri: str) -> bool:
    """Whether the bytes a chunk's file is read from still exist: the uploaded version in raw/,
    or for a backfill the archived copy it re-runs."""
    f = RawFile.from_uri(uri)
    if uri in chunk.file_sources:
        key, extra = chunk.file_sources[uri], {}
    else:
        key, extra = f.key, ({"VersionId": chunk.file_versions[uri]} if uri in chunk.file_versions else {})
    try:
        deps.clients.s3.head_object(Bucket=f.bucket, Key=key, **extra)
        return True
    except ClientError as exc:
        if error_code(exc) not in ("404", "NoSuchKey", "NotFound", "NoSuchVersion", "400"):
            raise
        return False


def missing_raw_files(deps: Deps, chunk: Chunk) -> list[str]:
    """The chunk's uploads whose bytes are gone (a retry would reject them as deleted)."""
    return [uri for uri in chunk.file_paths if not source_exists(deps, chunk, uri)]


def retry_batch(deps: Deps, batch_id: str) -> RetryResult:
    """failed -> pending (conditional), so the stream trigger / controller starts it again.

    Refuses unless the batch is failed, its raw files are all still there, and its failed
    execution has released the in-flight lock. The next execution is named
    ``<batch_id>-r<attempt>`` (names cannot be reused); the validate and transform jobs
    replace this batch's rows, so a re-run never double-counts.
    """
    chunk = find_batch(deps, batch_id)
    if chunk is None:
        raise RetryRefused(f"no batch {batch_id!r}; see `cartflow batches list`")
    if chunk.status != BatchStatus.FAILED.value:
        raise RetryRefused(f"batch {batch_id} is {chunk.status}; only failed batches can be retried")
    gone = missing_raw_files(deps, chunk)
    if gone:
        raise RetryRefused(
            f"batch {batch_id}: {len(gone)} of its raw files are gone (first: {gone[0]}); "
            "re-upload them (a new batch) instead of retrying this one"
        )
    table = BatchTable(deps)
    if not table.reopen_failed(chunk):
        now = table.get(chunk.group_key, chunk.batch_id)
        holder, _ = table.lock_holder()
        if now is not None and now.status != BatchStatus.FAILED.value:
            raise RetryRefused(f"batch {batch_id} became {now.status} meanwhile (retried by someone else?)")
        if holder == batch_id:
            raise RetryRefused(
                f"batch {batch_id}'s failed execution still holds the in-flight lock; "
                f"try again in a minute (the controller frees it after {START_GRACE_MS // 1000}s)"
            )
        raise RetryRefused(f"batch {batch_id} changed while retrying; run the command again")
    reopened = Chunk(**{**chunk.__dict__, "attempt": chunk.attempt + 1, "status": BatchStatus.PENDING.value})
    return RetryResult(batch_id, reopened.attempt, execution_name(reopened), chunk.execution_arn)


# ------------------------------------------------------------------------------- audit


@dataclass(frozen=True)
class Finding:
    """One broken invariant: ``kind`` is stable (tests, alerting), ``detail`` is for people."""

    kind: str
    subject: str
    detail: str


def _keys(deps: Deps, prefix: str) -> set[str]:
    pages = deps.clients.s3.get_paginator("list_objects_v2").paginate(Bucket=deps.settings.bucket, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", []) if not o["Key"].endswith("/")}


def audit(deps: Deps, *, stuck_after_s: float = 300.0) -> list[Finding]:
    """Check that every file ends in exactly one state and nothing is lost or doubled.

    * every raw object older than ``stuck_after_s`` has an event (no lost notification);
    * every batched event points at a chunk that lists it, and every chunk file has exactly
      one event pointing back (no file in two chunks, no chunk with a phantom file);
    * no event waits more than ``stuck_after_s`` past its debounce deadline (debouncer down?);
    * at most one chunk is processing, and the lock is held by it or by nobody;
    * a done chunk's files are archived under processed/<batch_id>/, a failed one's are in raw/.
    """
    s = deps.settings
    now = deps.now()
    chunks = BatchTable(deps).all()
    by_id = {c.batch_id: c for c in chunks}
    events = scan_items(deps.clients.dynamodb, s.events_table)
    findings: list[Finding] = []

    pointing: dict[str, list[str]] = defaultdict(list)  # batch_id -> event s3 paths
    removals = [e for e in events if e.get("status") == EventStatus.REMOVAL.value]
    events = [e for e in events if e.get("status") != EventStatus.REMOVAL.value]
    for e in removals:
        if not e.get("processed_flag") and float(e.get("debounce_deadline", now)) < now - stuck_after_s:
            findings.append(Finding("stuck_event", e["s3_path"], "a delete waiting long past its window (debouncer down?)"))
    for e in events:
        if e.get("batch_id"):
            pointing[e["batch_id"]].append(e["s3_path"])
            if e["batch_id"] not in by_id:
                findings.append(Finding("dangling_event", e["s3_path"], f"points at missing batch {e['batch_id']}"))
        elif e.get("status") == "received" and float(e.get("debounce_deadline", now)) < now - stuck_after_s:
            findings.append(Finding("stuck_event", e["s3_path"], "waiting long past its debounce deadline"))
    for c in chunks:
        listed, back = Counter(c.file_paths), Counter(pointing.get(c.batch_id, []))
        findings.extend(
            Finding("chunk_event_mismatch", c.batch_id, f"{path}: listed {listed[path]}x, events {back[path]}x")
            for path in sorted((listed - back) | (back - listed))
        )

    processing = [c.batch_id for c in chunks if c.status == BatchStatus.PROCESSING.value]
    if len(processing) > 1:
        findings.append(Finding("two_in_flight", ",".join(processing), f"{len(processing)} batches processing"))
    holder, acquired = BatchTable(deps).lock_holder()
    if holder and holder not in processing and deps.now_ms() - (acquired or 0) > START_GRACE_MS:
        findings.append(Finding("stale_lock", holder, "lock held by a batch that is not processing"))

    raw, archived = _keys(deps, RAW_PREFIX), _keys(deps, PROCESSED_PREFIX) | _keys(deps, REJECTED_PREFIX)
    seen = {e["s3_path"] for e in events}
    findings.extend(
        Finding("lost_file", s.s3_uri(key), "in raw/ but never recorded (notification lost?)")
        for key in sorted(raw)
        if s.s3_uri(key) not in seen and _age_s(deps, key, now) > stuck_after_s
    )
    for c in chunks:
        for uri in c.file_paths:
            key = uri.split("/", 3)[-1]
            if c.status == BatchStatus.DONE.value:
                # Validation may have rejected the file as a whole: then it lives under rejected/.
                outcome = outcomes_of(c).get(uri)
                if outcome is not None and outcome.reason == DELETED_REASON:
                    continue  # deleted before the batch read it: a terminal state with nothing to archive
                prefix = REJECTED_PREFIX if outcome is not None and outcome.status == "rejected" else PROCESSED_PREFIX
                if f"{prefix}{c.batch_id}/{key[len(RAW_PREFIX) :]}" not in archived:
                    findings.append(Finding("not_archived", c.batch_id, f"{uri} done but not under {prefix}{c.batch_id}/"))
            if c.status == BatchStatus.FAILED.value and not source_exists(deps, c, uri):
                findings.append(
                    Finding("failed_file_gone", c.batch_id, f"{uri}: its uploaded version is gone: cannot be retried")
                )
    return findings


def _age_s(deps: Deps, key: str, now: float) -> float:
    head: dict[str, Any] = deps.clients.s3.head_object(Bucket=deps.settings.bucket, Key=key)
    return now - head["LastModified"].timestamp()
