"""Replaying a whole run changes nothing: real stack (MiniStack, the functions as processes,
spark-runner with real Spark + Delta), like tests/integration/test_pipeline.py.

fixtures/valid runs once; then every recorded event is delivered again THREE times: the S3
notifications (copied by a tap queue on the bucket) re-sent to the ingest queue, every
batch_chunks stream record re-handed to stream_trigger, debouncer and controller ticks;
and the batch's execution is started again with the same input (name suffixed). No new
chunk may appear and the KPI tables must stay byte-identical.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from cartflow.local.stack import EmbeddedStack
from cartflow.ops.actions import audit
from cartflow.ops.views import batches, files, is_settled, upload_dir
from services import controller, debouncer, stream_trigger
from tests.conftest import FIXTURES
from tests.replay import StreamTap, executions, invoke, queue_url, receive_all, snapshot

pytestmark = pytest.mark.integration
TIMES = 3


@pytest.fixture(scope="module")
def settings(settings):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"debounce_seconds": 5})  # one fixture folder = one batch


@pytest.fixture(scope="module")
def stack(settings, stack_resources, deps):  # type: ignore[no-untyped-def]
    with EmbeddedStack(settings) as s:
        yield s


def add_tap(deps) -> str:  # type: ignore[no-untyped-def]
    """A second queue on the bucket's notification: a copy of every S3 event the run saw."""
    s3, sqs, bucket = deps.clients.s3, deps.clients.sqs, deps.settings.bucket
    url = sqs.create_queue(QueueName="test-notification-tap")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    config = s3.get_bucket_notification_configuration(Bucket=bucket)
    queues = config.get("QueueConfigurations", [])
    tap = {**{k: v for k, v in queues[0].items() if k != "Id"}, "Id": "test-tap", "QueueArn": arn}
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={"QueueConfigurations": [*queues, tap]})
    return str(url)


def wait_for(predicate: Any, timeout: float, what: str, stack: EmbeddedStack) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def queue_empty(deps, url: str) -> bool:  # type: ignore[no-untyped-def]
    attrs = deps.clients.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return all(int(v) == 0 for v in attrs.values())


def state(deps) -> dict[str, str]:  # type: ignore[no-untyped-def]
    s = deps.settings
    return {t: snapshot(deps, t) for t in (s.order_kpis_table, s.category_kpis_table, s.events_table, s.batch_chunks_table)}


def test_replaying_every_event_three_times_and_rerunning_the_execution_changes_nothing(deps, stack) -> None:  # type: ignore[no-untyped-def]
    s, sqs = deps.settings, deps.clients.sqs
    tap = add_tap(deps)
    keys = upload_dir(deps, FIXTURES / "valid")
    wait_for(lambda: is_settled(deps, len(keys)), 600, "the valid fixtures to settle", stack)
    [batch] = batches(deps)
    assert batch.status == "done"
    before = state(deps)
    assert json.loads(before[s.order_kpis_table]), "KPIs were written"

    notifications = [m["Body"] for m in receive_all(deps, tap, expected=len(keys), delete=True)]
    stream_records = StreamTap(deps, s.batch_chunks_table).read_new()
    [original] = executions(deps)
    run_input = deps.clients.sfn.describe_execution(executionArn=original["executionArn"])["input"]

    ingest_url = queue_url(deps, s.ingest_queue)
    for _ in range(TIMES):
        for body in notifications:  # the running ingest process consumes these
            sqs.send_message(QueueUrl=ingest_url, MessageBody=body)
        for rec in stream_records:
            invoke(deps, "stream-trigger", stream_trigger.handler, {"Records": [rec]})
        invoke(deps, "debouncer", debouncer.handler, {})
        invoke(deps, "controller", controller.handler, {})

    # A re-run of the batch's execution (same input, new name): the batch is done, so the
    # state machine's CheckCurrent guard ends it before any job, write, archive or alert.
    reruns = []
    for i in range(1, TIMES + 1):
        arn = deps.clients.sfn.start_execution(
            stateMachineArn=s.state_machine_arn, name=f"{original['name']}-replay{i}", input=run_input
        )["executionArn"]
        reruns.append(arn)
    wait_for(
        lambda: all(deps.clients.sfn.describe_execution(executionArn=a)["status"] != "RUNNING" for a in reruns),
        600,
        "the re-run executions",
        stack,
    )
    wait_for(lambda: queue_empty(deps, ingest_url), 120, "ingest to drain the replayed notifications", stack)
    time.sleep(s.debounce_seconds + 2 * s.debouncer_interval_seconds + 1)  # a new event would be batched by now

    replayed = {
        "S3 notifications": len(notifications) * TIMES,
        "stream records": len(stream_records) * TIMES,
        "debouncer ticks": TIMES,
        "controller ticks": TIMES,
        "execution re-runs": TIMES,
    }
    print(f"\nreplayed {sum(replayed.values())} events: {replayed}")
    outcomes = [deps.clients.sfn.describe_execution(executionArn=a)["status"] for a in reruns]
    print("re-run outcomes:", outcomes)
    assert outcomes == ["SUCCEEDED"] * TIMES  # ended quietly in NotCurrent

    after = state(deps)
    assert [b.batch_id for b in batches(deps)] == [batch.batch_id], "no new chunk"
    for table in before:
        assert after[table] == before[table], f"{table} changed after the replay"
    assert all(f.state == "archived" for f in files(deps))
    assert audit(deps, stuck_after_s=0) == []
