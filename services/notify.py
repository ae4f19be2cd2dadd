"""Failure notices the controller publishes itself (the state machine publishes its own).

Same shape as the state machine's NotifyFailure message, so one subscriber handles both:
batch id, the failing step and error, a summary line and the command to re-run the batch.
"""

from __future__ import annotations

import json
from typing import Any

from cartflow.core.batch_table import Chunk
from cartflow.core.deps import Deps


def retry_command(batch_id: str) -> str:
    return f"cartflow batches retry {batch_id}"


def failure_message(chunk: Chunk, step: str, error: str, cause: str) -> dict[str, Any]:
    return {
        "event": "batch_failed",
        "batch_id": chunk.batch_id,
        "group_key": chunk.group_key,
        "processing_date": chunk.processing_date,
        "failure": {"step": step, "error": {"Error": error, "Cause": cause}},
        "summary": f"batch {chunk.batch_id} failed at {step}: {error}",
        "retry_command": retry_command(chunk.batch_id),
        "execution_arn": chunk.execution_arn,
    }


def publish_failure(deps: Deps, chunk: Chunk, step: str, error: str, cause: str) -> None:
    deps.clients.sns.publish(
        TopicArn=deps.settings.failure_topic_arn,
        Message=json.dumps(failure_message(chunk, step, error, cause)),
        MessageAttributes={
            "event": {"DataType": "String", "StringValue": "batch_failed"},
            "batch_id": {"DataType": "String", "StringValue": chunk.batch_id},
        },
    )
