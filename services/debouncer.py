"""debouncer (scheduled): quiet groups -> batch chunks.

First, uploads still waiting that a later event on the same key replaces are settled: a
later upload supersedes an earlier one, a later delete withdraws it (both terminal, with
the reason; "later" is S3's per-key sequencer, docs/delivery.md). Then a group is quiet
when its newest event's debounce deadline has passed. Its remaining uploads become
one or more chunks of at most `max_files_per_chunk` files; each chunk is created in the same
transaction that marks its events processed (conditioned on them still being unprocessed),
so running twice, or twice at once, never batches a file twice. The chunk item itself is
BatchTable's (cartflow.core.batch_table); this module owns the event side of the write.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from cartflow.core.batch_table import BatchTable
from cartflow.core.deps import Deps, current_deps, query_items, to_ddb, values
from cartflow.core.models import DELETED_REASON, SUPERSEDED_REASON, EventStatus, RawFile

logger = Logger(service="cartflow-debouncer")
UNBATCHED_INDEX = "unbatched"


@dataclass(frozen=True)
class PendingEvent:
    group_key: str
    arrival_timestamp: Decimal
    s3_path: str
    debounce_deadline: Decimal
    sequencer: str = ""
    version_id: str | None = None
    removal: bool = False  # a user's delete of the key, not an upload
    size: int = 0  # bytes (the S3 notification's object size); chunks sum them for routing

    @property
    def order(self) -> tuple[str, Decimal]:
        # S3: compare sequencers of one key after right-padding the shorter with zeros;
        # the arrival time orders events without one.
        return (self.sequencer.ljust(64, "0"), self.arrival_timestamp)


@dataclass(frozen=True)
class Settled:
    """An upload that will not be batched: a later event on its key replaced it."""

    event: PendingEvent
    status: EventStatus  # SUPERSEDED or DELETED
    reason: str


def unbatched_events(deps: Deps) -> list[PendingEvent]:
    items = query_items(
        deps.clients.dynamodb,
        TableName=deps.settings.events_table,
        IndexName=UNBATCHED_INDEX,
        KeyConditionExpression="unbatched = :u",
        ExpressionAttributeValues=values(u="1"),
    )
    return [
        PendingEvent(
            d["group_key"],
            d["arrival_timestamp"],
            d["s3_path"],
            d["debounce_deadline"],
            str(d.get("sequencer", "")),
            d.get("version_id"),
            d.get("status") == EventStatus.REMOVAL.value,
            int(d.get("size", 0)),
        )
        for d in items
    ]


def settle_replaced(events: list[PendingEvent]) -> list[Settled]:
    """Pure: waiting uploads followed by a later event on the same key (upload or delete)."""
    by_path: dict[str, list[PendingEvent]] = defaultdict(list)
    for e in events:
        by_path[e.s3_path].append(e)
    settled = []
    for evs in by_path.values():
        evs.sort(key=lambda e: e.order)
        for earlier, later in pairwise(evs):
            if earlier.removal:
                continue
            if later.removal:
                settled.append(Settled(earlier, EventStatus.DELETED, DELETED_REASON))
            else:
                version = later.version_id or f"uploaded {later.arrival_timestamp}"
                settled.append(Settled(earlier, EventStatus.SUPERSEDED, SUPERSEDED_REASON.format(version=version)))
    return settled


def plan_chunks(events: list[PendingEvent], now: float, max_files: int) -> dict[str, list[list[PendingEvent]]]:
    """Pure: which quiet groups become which chunks (oldest files first).

    ``events`` are the uploads still to batch; removals count only for the quiet test (a
    delete keeps its group's window open like an upload) and are never batched.
    """
    groups: dict[str, list[PendingEvent]] = defaultdict(list)
    for e in events:
        groups[e.group_key].append(e)
    plan = {}
    for group_key, evs in sorted(groups.items()):
        if max(e.debounce_deadline for e in evs) > Decimal(str(now)):
            continue  # a file arrived within the window: keep waiting
        uploads = sorted((e for e in evs if not e.removal), key=lambda e: e.arrival_timestamp)
        plan[group_key] = [uploads[i : i + max_files] for i in range(0, len(uploads), max_files)]
    return plan


def settle_update(deps: Deps, event: PendingEvent, status: str, reason: str | None) -> dict[str, Any]:
    """The write ending a waiting event without a batch (conditioned on it still waiting)."""
    s = deps.settings
    names = {"#s": "status"}
    vals = values(t=True, f=False, st=status, x=int(deps.now()) + s.event_retention_days * 86_400)
    expr = "SET processed_flag = :t, #s = :st, expires_at = :x"
    if reason:
        expr += ", reason = :r"
        vals.update(values(r=reason))
    return {
        "TableName": s.events_table,
        "Key": to_ddb({"group_key": event.group_key, "arrival_timestamp": event.arrival_timestamp}),
        "UpdateExpression": expr + " REMOVE unbatched",
        "ConditionExpression": "processed_flag = :f",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": vals,
    }


def _conditional_update(deps: Deps, update: dict[str, Any]) -> bool:
    ddb = deps.clients.dynamodb
    try:
        ddb.update_item(**update)
        return True
    except ddb.exceptions.ConditionalCheckFailedException:
        return False  # a concurrent run settled it first


def settle_events(deps: Deps, events: list[PendingEvent], now: float) -> list[PendingEvent]:
    """Settle replaced uploads and spent removals; returns the events still to plan."""
    settled = settle_replaced(events)
    done = {id(x.event) for x in settled}
    for x in settled:
        if x.status is EventStatus.SUPERSEDED and x.event.version_id:
            # An overwrite replaces the file: drop that version, or it would become the key's
            # current object again once the later upload is archived. Deleting a version that
            # is already gone succeeds, so a repeated run is harmless.
            raw = RawFile.from_uri(x.event.s3_path)
            deps.clients.s3.delete_object(Bucket=raw.bucket, Key=raw.key, VersionId=x.event.version_id)
        if _conditional_update(deps, settle_update(deps, x.event, x.status.value, x.reason)):
            logger.info("upload not batched", extra={"s3_path": x.event.s3_path, "status": x.status.value})
    # A removal waits out its own window (an upload's event may arrive after the delete's).
    for e in events:
        if e.removal and e.debounce_deadline <= Decimal(str(now)):
            _conditional_update(deps, settle_update(deps, e, EventStatus.REMOVAL.value, None))
    return [e for e in events if id(e) not in done]


def event_updates(deps: Deps, batch_id: str, created_ms: int, events: list[PendingEvent]) -> list[dict[str, Any]]:
    """The transaction items marking ``events`` batched into ``batch_id``, each conditioned on
    its event still being unprocessed (written with the chunk: BatchTable.create)."""
    s = deps.settings
    expires = created_ms // 1000 + s.event_retention_days * 86_400
    return [
        {
            "Update": {
                "TableName": s.events_table,
                "Key": to_ddb({"group_key": e.group_key, "arrival_timestamp": e.arrival_timestamp}),
                "UpdateExpression": "SET processed_flag = :t, #s = :batched, batch_id = :b, "
                "batch_start_timestamp = :bs, expires_at = :x REMOVE unbatched",
                "ConditionExpression": "processed_flag = :f",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": values(
                    t=True,
                    f=False,
                    batched=EventStatus.BATCHED.value,
                    b=batch_id,
                    bs=events[0].arrival_timestamp,
                    x=expires,
                ),
            }
        }
        for e in events
    ]


def close_quiet_groups(deps: Deps) -> list[str]:
    """Create chunks for every quiet group; returns the batch ids created."""
    now = deps.now()
    created_ms = deps.now_ms()
    table = BatchTable(deps)
    created = []
    remaining = settle_events(deps, unbatched_events(deps), now)
    for group_key, chunks in plan_chunks(remaining, now, deps.settings.max_files_per_chunk).items():
        for idx, events in enumerate(chunks):
            # Starts with the creation time so batch ids sort oldest first ("latest batch wins").
            batch_id = f"b{created_ms:013d}-{group_key}-{idx:03d}"
            paths = [e.s3_path for e in events]
            versions = {e.s3_path: e.version_id for e in events if e.version_id}
            updates = event_updates(deps, batch_id, created_ms, events)
            first, size = events[0].arrival_timestamp, sum(e.size for e in events)
            if not table.create(
                group_key, batch_id, created_ms, paths, first, with_writes=updates, file_versions=versions, input_bytes=size
            ):
                logger.info("chunk lost a race, skipped", extra={"batch_id": batch_id})
                continue
            created.append(batch_id)
            logger.info("created chunk", extra={"batch_id": batch_id, "files": len(events)})
    return created


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """EventBridge Scheduler entry point."""
    return {"created": close_quiet_groups(current_deps())}
