"""The local event sources against a real MiniStack process (started here, on a free port).

Each test makes its own queue/bucket/table names, so they share one emulator per module.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cartflow.core.aws import AwsClients
from cartflow.core.config import Settings
from cartflow.local.emulator import free_port, start_emulator
from cartflow.local.lambda_context import LocalFunction
from cartflow.local.liveness import is_alive
from cartflow.local.schedule_source import ScheduleSource
from cartflow.local.sqs_source import SqsSource
from cartflow.local.stream_source import DynamoDBStreamSource

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Our own MiniStack on a free port (the project's launcher installs it if missing)."""
    state = tmp_path_factory.mktemp("emulator")
    emu = start_emulator(Settings(state_dir=state), port=free_port(), log_dir=state)
    try:
        yield emu.endpoint
    finally:
        emu.stop()


@pytest.fixture
def settings(endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    return Settings(aws_endpoint_url=endpoint, state_dir=tmp_path / "state")


@pytest.fixture
def clients(settings: Settings) -> AwsClients:
    return AwsClients(settings)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def poll_until(source: Any, done: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        if source.poll_once() == 0:
            time.sleep(0.1)


class Recorder:
    """Records every Lambda event; ``respond`` decides the handler's answer per event."""

    def __init__(self, respond: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.respond = respond

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        assert context.get_remaining_time_in_millis() > 0
        self.events.append(json.loads(json.dumps(event)))
        return self.respond(event) if self.respond else None

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r for e in self.events for r in e["Records"]]


# --- SQS ----------------------------------------------------------------------------------------
def _queue(clients: AwsClients, visibility_timeout: int) -> tuple[str, str, str]:
    name = _name("q")
    url = clients.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility_timeout)})["QueueUrl"]
    arn = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return name, url, arn


def test_s3_notification_reaches_handler_through_sqs(settings: Settings, clients: AwsClients) -> None:
    queue, _, queue_arn = _queue(clients, visibility_timeout=30)
    bucket = _name("bkt")
    clients.s3.create_bucket(Bucket=bucket)
    clients.s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}},
                }
            ]
        },
    )
    handler = Recorder()
    source = SqsSource(LocalFunction("ingest", handler, settings), clients, queue, wait_time_seconds=1)

    def s3_records() -> list[dict[str, Any]]:
        # S3 first sends an s3:TestEvent (no "Records") when notifications are configured.
        return [s for r in handler.records for s in json.loads(r["body"]).get("Records", [])]

    started = time.monotonic()
    clients.s3.put_object(Bucket=bucket, Key="incoming/orders-1.csv", Body=b"id\n1\n")
    poll_until(source, lambda: bool(s3_records()))
    log.info("S3 put -> handler: %.3fs", time.monotonic() - started)

    s3_event = s3_records()[0]
    assert s3_event["eventSource"] == "aws:s3" and s3_event["eventName"].startswith("ObjectCreated:")
    assert s3_event["s3"]["bucket"]["name"] == bucket and s3_event["s3"]["object"]["key"] == "incoming/orders-1.csv"
    record = next(r for r in handler.records if "Records" in json.loads(r["body"]))
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == queue_arn
    assert record["awsRegion"] == "us-east-1" and record["md5OfBody"] and record["receiptHandle"]
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    # Everything was acknowledged: nothing comes back.
    assert source.poll_once() == 0


def test_partial_batch_failure_redelivers_only_the_failed_message(settings: Settings, clients: AwsClients) -> None:
    queue, url, _ = _queue(clients, visibility_timeout=1)
    failed_once: set[str] = set()

    def respond(event: dict[str, Any]) -> dict[str, Any]:
        failures = []
        for r in event["Records"]:
            if r["body"] == "poison" and r["messageId"] not in failed_once:
                failed_once.add(r["messageId"])
                failures.append({"itemIdentifier": r["messageId"]})
        return {"batchItemFailures": failures}

    handler = Recorder(respond)
    source = SqsSource(LocalFunction("ingest", handler, settings), clients, queue, wait_time_seconds=1)
    for body in ("a", "poison", "b"):
        clients.sqs.send_message(QueueUrl=url, MessageBody=body)
    started = time.monotonic()
    poll_until(source, lambda: [r["body"] for r in handler.records].count("poison") == 2, timeout=20)
    log.info("partial failure redelivered after %.3fs (VisibilityTimeout 1 s)", time.monotonic() - started)

    bodies = [r["body"] for r in handler.records]
    assert sorted(bodies) == ["a", "b", "poison", "poison"]
    redelivered = [r for r in handler.records if r["body"] == "poison"][-1]
    assert redelivered["attributes"]["ApproximateReceiveCount"] == "2"
    time.sleep(1.5)  # past the visibility timeout: anything not deleted would be back
    assert source.poll_once() == 0


def test_handler_exception_deletes_nothing(settings: Settings, clients: AwsClients) -> None:
    queue, url, _ = _queue(clients, visibility_timeout=1)
    calls = {"n": 0}

    def respond(event: dict[str, Any]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("first delivery fails")

    handler = Recorder(respond)
    source = SqsSource(LocalFunction("ingest", handler, settings), clients, queue, wait_time_seconds=1)
    clients.sqs.send_message(QueueUrl=url, MessageBody="x")
    poll_until(source, lambda: len(handler.records) == 2)
    assert [r["attributes"]["ApproximateReceiveCount"] for r in handler.records] == ["1", "2"]
    time.sleep(1.5)
    assert source.poll_once() == 0


def test_run_loop_stops_and_touches_liveness(settings: Settings, clients: AwsClients) -> None:
    queue, url, _ = _queue(clients, visibility_timeout=30)
    handler = Recorder()
    source = SqsSource(LocalFunction("ingest", handler, settings), clients, queue, wait_time_seconds=1)
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop,))
    thread.start()
    try:
        clients.sqs.send_message(QueueUrl=url, MessageBody="hello")
        deadline = time.monotonic() + 10
        while not handler.records and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r["body"] for r in handler.records] == ["hello"]
        assert is_alive(source.liveness.path, max_age_s=5)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()


# --- DynamoDB Streams -----------------------------------------------------------------------------
def _table(clients: AwsClients, name: str | None = None) -> str:
    name = name or _name("tbl")
    clients.dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    return name


def _put(clients: AwsClients, table: str, pk: str, v: int) -> None:
    clients.dynamodb.put_item(TableName=table, Item={"pk": {"S": pk}, "v": {"N": str(v)}})


def _stream_source(settings: Settings, clients: AwsClients, table: str, handler: Recorder, **kw: Any) -> DynamoDBStreamSource:
    kw.setdefault("poll_interval_s", 0.1)
    kw.setdefault("retry_backoff_s", 0.05)
    return DynamoDBStreamSource(LocalFunction("events-fn", handler, settings), clients, table, **kw)


def test_stream_insert_and_modify_reach_handler_with_new_image(settings: Settings, clients: AwsClients) -> None:
    table = _table(clients)
    stream_arn = clients.dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    handler = Recorder()
    source = _stream_source(settings, clients, table, handler)
    started = time.monotonic()
    _put(clients, table, "o-1", 1)
    clients.dynamodb.update_item(
        TableName=table,
        Key={"pk": {"S": "o-1"}},
        UpdateExpression="SET v = :v",
        ExpressionAttributeValues={":v": {"N": "2"}},
    )
    poll_until(source, lambda: len(handler.records) >= 2)
    log.info("DynamoDB write -> handler: %.3fs", time.monotonic() - started)

    insert, modify = handler.records
    assert [insert["eventName"], modify["eventName"]] == ["INSERT", "MODIFY"]
    for r in (insert, modify):
        assert r["eventSource"] == "aws:dynamodb" and r["eventSourceARN"] == stream_arn
        assert r["awsRegion"] == "us-east-1" and r["eventID"]
        assert isinstance(r["dynamodb"]["ApproximateCreationDateTime"], int)
        assert r["dynamodb"]["Keys"] == {"pk": {"S": "o-1"}}
        assert r["dynamodb"]["StreamViewType"] == "NEW_IMAGE" and "OldImage" not in r["dynamodb"]
    assert insert["dynamodb"]["NewImage"]["v"] == {"N": "1"}
    assert modify["dynamodb"]["NewImage"]["v"] == {"N": "2"}
    assert source.checkpoints.path == settings.state_dir / "events-fn.checkpoints.json"
    assert (
        source.checkpoints.sequence_number(stream_arn, "shardId-00000000000000000000-00000000")
        == (modify["dynamodb"]["SequenceNumber"])
    )


def test_stream_run_loop_delivers_and_stops_promptly(settings: Settings, clients: AwsClients) -> None:
    table = _table(clients)
    handler = Recorder()
    source = _stream_source(settings, clients, table, handler, poll_interval_s=0.5)
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop,))
    thread.start()
    try:
        _put(clients, table, "x", 1)
        deadline = time.monotonic() + 10
        while not handler.records and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in handler.records] == ["x"]
        assert is_alive(source.liveness.path, max_age_s=5)
    finally:
        stopped_at = time.monotonic()
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive() and time.monotonic() - stopped_at < 2


def test_restarted_stream_source_does_not_redeliver(settings: Settings, clients: AwsClients) -> None:
    table = _table(clients)
    first = Recorder()
    for i in range(3):
        _put(clients, table, f"k{i}", i)
    poll_until(_stream_source(settings, clients, table, first), lambda: len(first.records) == 3)

    # A new process: same name, same state_dir, hence the same checkpoint file.
    second = Recorder()
    restarted = _stream_source(settings, clients, table, second)
    assert restarted.poll_once() == 0 and restarted.poll_once() == 0
    _put(clients, table, "k3", 3)
    poll_until(restarted, lambda: len(second.records) == 1)
    assert second.records[0]["dynamodb"]["Keys"] == {"pk": {"S": "k3"}}


def test_partial_stream_failure_retries_from_the_failed_record(settings: Settings, clients: AwsClients) -> None:
    table = _table(clients)
    for i in range(4):
        _put(clients, table, f"k{i}", i)
    seen: list[str] = []

    def respond(event: dict[str, Any]) -> dict[str, Any]:
        keys = [r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]]
        seen.append(",".join(keys))
        if len(seen) == 1:  # k2 fails the first time
            return {"batchItemFailures": [{"itemIdentifier": event["Records"][2]["dynamodb"]["SequenceNumber"]}]}
        return {"batchItemFailures": []}

    source = _stream_source(settings, clients, table, Recorder(respond))
    poll_until(source, lambda: len(seen) == 2)
    assert seen == ["k0,k1,k2,k3", "k2,k3"]


def test_latest_without_checkpoint_starts_at_the_tail(settings: Settings, clients: AwsClients) -> None:
    table = _table(clients)
    _put(clients, table, "old", 1)
    handler = Recorder()
    source = _stream_source(settings, clients, table, handler, starting_position="LATEST")
    assert source.poll_once() == 0
    _put(clients, table, "new", 2)
    poll_until(source, lambda: len(handler.records) == 1)
    assert handler.records[0]["dynamodb"]["Keys"] == {"pk": {"S": "new"}}
    assert source.poll_once() == 0


def test_stream_of_a_recreated_table_is_followed(settings: Settings, clients: AwsClients) -> None:
    handler = Recorder()
    table = _name("tbl")
    # The source starts before the table exists: a stream that appears later is read from its start.
    source = _stream_source(settings, clients, table, handler, starting_position="LATEST", shard_refresh_s=0.2)
    assert source.poll_once() == 0
    _table(clients, table)
    _put(clients, table, "a", 1)
    poll_until(source, lambda: len(handler.records) == 1)

    clients.dynamodb.delete_table(TableName=table)
    _table(clients, table)
    new_arn = clients.dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    _put(clients, table, "b", 2)
    poll_until(source, lambda: len(handler.records) == 2)
    assert handler.records[1]["dynamodb"]["Keys"] == {"pk": {"S": "b"}}
    assert handler.records[1]["eventSourceARN"] == new_arn
    for _ in range(3):
        assert source.poll_once() == 0


def test_table_recreated_while_down_drains_old_stream_first(settings: Settings, clients: AwsClients) -> None:
    table = _table(clients)
    old_arn = clients.dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    first = Recorder()
    _put(clients, table, "a", 1)
    poll_until(_stream_source(settings, clients, table, first), lambda: len(first.records) == 1)

    # While no runner is up: one more record on the old stream, then the table is re-created.
    _put(clients, table, "a2", 2)
    clients.dynamodb.delete_table(TableName=table)
    _table(clients, table)
    _put(clients, table, "b", 3)

    second = Recorder()
    source = _stream_source(settings, clients, table, second, shard_refresh_s=0.2)
    poll_until(source, lambda: len(second.records) == 2)
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in second.records] == ["a2", "b"]
    assert second.records[0]["eventSourceARN"] == old_arn
    # The drained stream's checkpoints are dropped once the new stream is the one followed.
    _stream_source(settings, clients, table, Recorder()).poll_once()
    assert source.checkpoints.path.exists()
    assert old_arn not in json.loads(source.checkpoints.path.read_text())["streams"]


# --- Schedule ------------------------------------------------------------------------------------------
def test_schedule_fires_about_n_times(settings: Settings) -> None:
    events: list[dict[str, Any]] = []
    source = ScheduleSource(LocalFunction("debouncer", lambda e, c: events.append(e), settings), settings, interval_s=0.25)
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop,))
    thread.start()
    time.sleep(2.1)  # ticks at 0.25, 0.5, ... 2.0 s
    stop.set()
    thread.join(timeout=2)
    assert 7 <= len(events) <= 9
    assert all(e["source"] == "aws.scheduler" and e["resources"] == [source.schedule_arn] for e in events)
    assert len({e["id"] for e in events}) == len(events)
