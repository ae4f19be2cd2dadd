"""debouncer (scheduled): quiet groups -> batch chunks.

A group is quiet when its newest event's debounce deadline has passed. Its events become
one or more chunks of at most `max_files_per_chunk` files; each chunk is created in the same
transaction that marks its events processed (conditioned on them still being unprocessed),
so running twice, or twice at once, never batches a file twice. The chunk item itself is
BatchTable's (cartflow.core.batch_table); this module owns the event side of the write.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from cartflow.core.batch_table import BatchTable
from cartflow.core.deps import Deps, current_deps, query_items, to_ddb, values
from cartflow.core.models import EventStatus

logger = Logger(service="cartflow-debouncer")
UNBATCHED_INDEX = "unbatched"


@dataclass(frozen=True)
class PendingEvent:
    group_key: str
    arrival_timestamp: Decimal
    s3_path: str
    debounce_deadline: Decimal


def unbatched_events(deps: Deps) -> list[PendingEvent]:
    items = query_items(
        deps.clients.dynamodb,
        TableName=deps.settings.events_table,
        IndexName=UNBATCHED_INDEX,
        KeyConditionExpression="unbatched = :u",
        ExpressionAttributeValues=values(u="1"),
    )
    return [PendingEvent(d["group_key"], d["arrival_timestamp"], d["s3_path"], d["debounce_deadline"]) for d in items]


def plan_chunks(events: list[PendingEvent], now: float, max_files: int) -> dict[str, list[list[PendingEvent]]]:
    """Pure: which quiet groups become which chunks (oldest files first)."""
    groups: dict[str, list[PendingEvent]] = defaultdict(list)
    for e in events:
        groups[e.group_key].append(e)
    plan = {}
    for group_key, evs in sorted(groups.items()):
        if max(e.debounce_deadline for e in evs) > Decimal(str(now)):
            continue  # a file arrived within the window: keep waiting
        evs.sort(key=lambda e: e.arrival_timestamp)
        plan[group_key] = [evs[i : i + max_files] for i in range(0, len(evs), max_files)]
    return plan


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
    for group_key, chunks in plan_chunks(unbatched_events(deps), now, deps.settings.max_files_per_chunk).items():
        for idx, events in enumerate(chunks):
            # Starts with the creation time so batch ids sort oldest first ("latest batch wins").
            batch_id = f"b{created_ms:013d}-{group_key}-{idx:03d}"
            paths = [e.s3_path for e in events]
            updates = event_updates(deps, batch_id, created_ms, events)
            if not table.create(group_key, batch_id, created_ms, paths, events[0].arrival_timestamp, with_writes=updates):
                logger.info("chunk lost a race, skipped", extra={"batch_id": batch_id})
                continue
            created.append(batch_id)
            logger.info("created chunk", extra={"batch_id": batch_id, "files": len(events)})
    return created


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """EventBridge Scheduler entry point."""
    return {"created": close_quiet_groups(current_deps())}
