"""The controller's watchdog against a real MiniStack and real executions.

Nobody serves the job activities here, exactly as when the spark-runner is killed: the
emulator would wait forever (it does not enforce HeartbeatSeconds). The watchdog must stop
the execution, re-queue the batch as a new attempt, and after max_auto_reruns give up with
a failure notice that carries the retry command.
"""

from __future__ import annotations

import json
import time

import pytest

from cartflow.core.batch_table import BatchTable
from services.controller import control
from tests.conftest import subscribe_queue

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def settings(settings):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"job_heartbeat_seconds": 10, "max_auto_reruns": 1, "state_machine_target": "local"})


def put_pending_chunk(deps, batch_id: str) -> None:  # type: ignore[no-untyped-def]
    s = deps.settings
    key = f"raw/orders/{batch_id}.csv"
    deps.clients.s3.put_object(Bucket=s.bucket, Key=key, Body=b"order_id\n1\n")
    deps.clients.dynamodb.put_item(
        TableName=s.batch_chunks_table,
        Item={
            "group_key": {"S": "2026-11-29"},
            "batch_id": {"S": batch_id},
            "status": {"S": "pending"},
            "created_at": {"N": str(int(time.time() * 1000))},
            "file_paths": {"L": [{"S": f"s3://{s.bucket}/{key}"}]},
        },
    )


def go_silent(deps, batch_id: str, seconds: int) -> None:  # type: ignore[no-untyped-def]
    """Pretend the worker's last sign of life was `seconds` ago."""
    past = str(int(time.time() * 1000) - seconds * 1000)
    deps.clients.dynamodb.update_item(
        TableName=deps.settings.batch_chunks_table,
        Key={"group_key": {"S": "2026-11-29"}, "batch_id": {"S": batch_id}},
        UpdateExpression="SET processing_started_at = :t, worker_heartbeat_at = :t",
        ExpressionAttributeValues={":t": {"N": past}},
    )


def status_of(deps, arn: str) -> str:  # type: ignore[no-untyped-def]
    return str(deps.clients.sfn.describe_execution(executionArn=arn)["status"])


def test_a_silent_worker_gets_its_batch_rerun_then_failed_with_a_notice(deps) -> None:  # type: ignore[no-untyped-def]
    notices = subscribe_queue(deps, deps.settings.failure_topic_arn, "watchdog-notices")
    table = BatchTable(deps)
    put_pending_chunk(deps, "wd-1")
    assert control(deps).started == "wd-1"
    first = table.get("2026-11-29", "wd-1")
    assert first is not None and first.status == "processing" and first.execution_arn

    # A fresh heartbeat: nothing happens.
    report = control(deps)
    assert (report.stopped, report.requeued) == ([], [])
    assert status_of(deps, first.execution_arn) == "RUNNING"

    # Silent past job_heartbeat_seconds: stopped, re-queued, started again as attempt 1.
    go_silent(deps, "wd-1", 30)
    report = control(deps)
    assert report.requeued == ["wd-1"] and report.stopped == ["wd-1"]
    assert status_of(deps, first.execution_arn) == "ABORTED"
    if report.started is None:  # the same tick may already have started it again
        report = control(deps)
    second = table.get("2026-11-29", "wd-1")
    assert second is not None and second.status == "processing"
    assert (second.attempt, second.auto_reruns) == (1, 1)
    assert second.execution_arn and second.execution_arn.endswith(":wd-1-r1")
    assert table.lock_holder()[0] == "wd-1"

    # Silent again with no re-runs left: failed for good, lock free, a notice with the retry command.
    go_silent(deps, "wd-1", 30)
    report = control(deps)
    assert report.finalized == {"wd-1": "failed"}
    assert status_of(deps, second.execution_arn) == "ABORTED"
    final = table.get("2026-11-29", "wd-1")
    assert final is not None and final.status == "failed" and "no heartbeat" in (final.error or "")
    assert table.lock_holder()[0] is None
    deadline, bodies = time.monotonic() + 15, []
    while time.monotonic() < deadline and not bodies:
        bodies = [
            json.loads(m["Body"])
            for m in deps.clients.sqs.receive_message(QueueUrl=notices, WaitTimeSeconds=2).get("Messages", [])
        ]
    [notice] = [b for b in bodies if b["batch_id"] == "wd-1"]
    assert notice["failure"]["error"]["Error"] == "cartflow.WorkerLost"
    assert notice["retry_command"] == "cartflow batches retry wd-1"


def test_the_watchdog_stays_off_on_aws(deps) -> None:  # type: ignore[no-untyped-def]
    from cartflow.core.deps import Deps

    aws = Deps.from_settings(deps.settings.model_copy(update={"state_machine_target": "aws"}))
    put_pending_chunk(deps, "wd-2")
    assert control(deps).started == "wd-2"
    go_silent(deps, "wd-2", 30)
    report = control(aws)  # ECS reports its own task deaths there; heartbeats are not stamped
    assert (report.stopped, report.requeued, report.finalized) == ([], [], {})
