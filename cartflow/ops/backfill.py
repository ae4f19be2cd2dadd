"""Reprocess on purpose: `cartflow backfill` re-runs archived uploads through the current
contracts and KPI definitions.

Each done batch whose group (upload day) is in the range becomes one new pending batch that
reads the archived copies (processed/ or rejected/ of that batch) and *replaces* the
original's rows: validation overwrites the original's validated, quarantined and registry
rows, and the transform recomputes the touched dates. The new batch id is the original's
plus ``-bfNNN``, so it sorts where the original did and "latest batch wins" between it and
later uploads is unchanged. A second backfill re-runs the newest run of each upload. The
batches go through the normal queue: one batch in flight still holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from cartflow.core.batch_table import BatchTable, Chunk
from cartflow.core.deps import Deps, to_ddb
from cartflow.core.errors import BadInput
from cartflow.core.models import (
    DELETED_REASON,
    PROCESSED_PREFIX,
    RAW_PREFIX,
    REJECTED_PREFIX,
    BatchStatus,
    DataType,
    EventStatus,
    RawFile,
)
from cartflow.ops.views import outcomes_of

_BACKFILL_SUFFIX = re.compile(r"^(?P<root>.+)-bf(?P<n>\d{3})$")
MAX_EXECUTION_NAME = 80


@dataclass(frozen=True)
class BackfillBatch:
    """One planned re-run: ``source`` is the batch whose archived copies it reads and replaces."""

    batch_id: str
    source: Chunk
    files: dict[str, str]  # raw URI -> archived key it reads


def next_backfill_id(batch_id: str) -> str:
    """``X`` -> ``X-bf001``; ``X-bf001`` -> ``X-bf002`` (sorts right after the original)."""
    m = _BACKFILL_SUFFIX.match(batch_id)
    root, n = (m["root"], int(m["n"]) + 1) if m else (batch_id, 1)
    new = f"{root}-bf{n:03d}"
    if len(new) > MAX_EXECUTION_NAME - 4:  # room for a retry's "-r<n>"
        raise BadInput(f"batch {batch_id}: backfilled too often to name another run ({new!r} is too long)")
    return new


def _archived_files(chunk: Chunk, dataset: DataType | None) -> dict[str, str]:
    outcomes = outcomes_of(chunk)
    files = {}
    for uri in chunk.file_paths:
        raw = RawFile.from_uri(uri)
        if dataset is not None and raw.data_type != dataset:
            continue
        outcome = outcomes.get(uri)
        if outcome is not None and outcome.reason == DELETED_REASON:
            continue  # never read: nothing archived
        prefix = REJECTED_PREFIX if outcome is not None and outcome.status == "rejected" else PROCESSED_PREFIX
        files[uri] = f"{prefix}{chunk.batch_id}/{raw.key[len(RAW_PREFIX) :]}"
    return files


def plan_backfill(chunks: list[Chunk], start: date, end: date, dataset: DataType | None = None) -> list[BackfillBatch]:
    """Pure: the newest done run of every batch uploaded from ``start`` to ``end`` (inclusive)."""
    if end < start:
        raise BadInput(f"--to {end} is before --from {start}")
    replaced = {r for c in chunks if c.status == BatchStatus.DONE.value for r in c.replaces}
    in_flight = {r for c in chunks if c.status != BatchStatus.DONE.value for r in c.replaces}
    plan = []
    for chunk in sorted(chunks, key=lambda c: (c.created_at, c.batch_id)):
        if chunk.status != BatchStatus.DONE.value or chunk.batch_id in replaced:
            continue
        try:
            day = date.fromisoformat(chunk.group_key)
        except ValueError:
            continue
        if not start <= day <= end:
            continue
        if chunk.batch_id in in_flight:
            raise BadInput(f"batch {chunk.batch_id} is already being backfilled; wait for it (cartflow batches list)")
        files = _archived_files(chunk, dataset)
        if files:
            plan.append(BackfillBatch(next_backfill_id(chunk.batch_id), chunk, files))
    return plan


def _event_puts(deps: Deps, batch: BackfillBatch, arrival: Decimal) -> list[dict[str, Any]]:
    """One events-table item per re-run upload: it is a unit of work of its own (files, audit)."""
    s = deps.settings
    expires = int(deps.now()) + s.event_retention_days * 86_400
    puts = []
    for i, (uri, source_key) in enumerate(sorted(batch.files.items())):
        raw = RawFile.from_uri(uri)
        item = {
            "group_key": batch.source.group_key,
            "arrival_timestamp": arrival + Decimal(i) / Decimal(1_000_000),
            "s3_path": uri,
            "data_type_part": raw.data_type_part,
            "status": EventStatus.BATCHED.value,
            "processed_flag": True,
            "batch_id": batch.batch_id,
            "backfill_of": batch.source.batch_id,
            "source_key": source_key,
            "expires_at": expires,
        }
        puts.append(
            {
                "Put": {
                    "TableName": s.events_table,
                    "Item": to_ddb(item),
                    "ConditionExpression": "attribute_not_exists(arrival_timestamp)",
                }
            }
        )
    return puts


def create_backfill(deps: Deps, plan: list[BackfillBatch]) -> list[str]:
    """Create the planned batches as pending chunks (each with its events, in one transaction)."""
    table = BatchTable(deps)
    created = []
    for batch in plan:
        created_ms = deps.now_ms()
        arrival = Decimal(created_ms) / Decimal(1000)
        ok = table.create(
            batch.source.group_key,
            batch.batch_id,
            created_ms,
            sorted(batch.files),
            arrival,
            with_writes=_event_puts(deps, batch, arrival),
            replaces=[batch.source.batch_id],
            file_sources=batch.files,
        )
        if not ok:
            raise BadInput(f"batch {batch.batch_id} exists already (another backfill ran at the same time?)")
        created.append(batch.batch_id)
    return created
