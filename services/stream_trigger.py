"""stream trigger: batch_chunks stream (NEW_IMAGE) -> start the oldest pending chunk.

A new pending chunk (INSERT) or a chunk reaching done/failed (MODIFY) is the moment the
next batch may start; dispatch decides, under the lock, whether one actually can.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent
from aws_lambda_powertools.utilities.typing import LambdaContext

from cartflow.core.batch_table import STATUS, is_lock
from cartflow.core.deps import Deps, current_deps
from cartflow.core.models import BatchStatus
from services.dispatch import start_next_pending

logger = Logger(service="cartflow-stream-trigger")

_WAKING = {BatchStatus.PENDING.value, BatchStatus.DONE.value, BatchStatus.FAILED.value}


def should_dispatch(event: DynamoDBStreamEvent) -> bool:
    """Pure: does any record in this batch free a slot or add work?"""
    for record in event.records:
        ddb = record.dynamodb
        image = ddb.new_image if ddb else None
        if not image or is_lock(image):
            continue
        if str(record.event_name.name if record.event_name else "") in ("INSERT", "MODIFY") and image.get(STATUS) in _WAKING:
            return True
    return False


def handle_stream(event: DynamoDBStreamEvent, deps: Deps) -> str | None:
    if not should_dispatch(event):
        return None
    return start_next_pending(deps)


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    started = handle_stream(DynamoDBStreamEvent(event), current_deps())
    # A raised exception makes the event source retry the whole batch, which is what we
    # want for a failed start (the chunk was un-claimed); nothing to report per record.
    return {"batchItemFailures": [], "started": started}
