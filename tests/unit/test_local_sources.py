"""Unit tests of the local event-source runner: event shapes, checkpoints, failure rules.

AWS is replaced by small in-memory fakes of the few calls each source makes; the same
behaviour against a real emulator is in tests/integration/test_local_sources.py.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from cartflow.core.config import Settings
from cartflow.local.checkpoints import CheckpointError, CheckpointStore
from cartflow.local.lambda_context import LocalFunction, LocalLambdaContext
from cartflow.local.liveness import Liveness, is_alive
from cartflow.local.liveness import main as liveness_main
from cartflow.local.schedule_source import ScheduleSource, scheduler_event
from cartflow.local.sources import failed_item_ids
from cartflow.local.sqs_source import SqsSource, sqs_event_record
from cartflow.local.stream_source import DynamoDBStreamSource, stream_event_record

STREAM_ARN = "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/2026-01-01T00:00:00.000"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state")


def _client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "Op")


class Recorder:
    """A handler that records events and answers from a script (callable or value per call)."""

    def __init__(self, *answers: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.contexts: list[Any] = []
        self.answers = list(answers)

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        self.events.append(json.loads(json.dumps(event)))  # also proves the event is JSON
        self.contexts.append(context)
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, Exception):
            raise answer
        return answer(event) if callable(answer) else answer


# --- LambdaContext -----------------------------------------------------------------------
def test_context_has_lambda_attributes_and_counts_down(settings: Settings) -> None:
    fn = LocalFunction("orders-fn", lambda e, c: None, settings, timeout_s=2.0, memory_limit_in_mb=256)
    a, b = fn.new_context(), fn.new_context()
    assert a.aws_request_id != b.aws_request_id
    assert a.function_name == "orders-fn" and a.function_version == "$LATEST"
    assert a.invoked_function_arn == "arn:aws:lambda:us-east-1:000000000000:function:orders-fn"
    assert a.memory_limit_in_mb == 256
    assert a.log_group_name == "/aws/lambda/orders-fn" and a.log_stream_name
    assert 1500 < a.get_remaining_time_in_millis() <= 2000
    expired = LocalLambdaContext(function_name="x", invoked_function_arn="a", timeout_s=0, memory_limit_in_mb=1)
    assert expired.get_remaining_time_in_millis() == 0


def test_context_works_with_powertools_logger_and_batch(settings: Settings) -> None:
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    logger = Logger(service="t")
    processor = BatchProcessor(event_type=EventType.SQS)

    def record_handler(record: Any) -> None:
        if record.body == "bad":
            raise ValueError("bad")

    @logger.inject_lambda_context
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return process_partial_response(event, record_handler, processor, context)

    fn = LocalFunction("pt-fn", handler, settings)
    msgs = [_sqs_message("m1", "ok"), _sqs_message("m2", "bad")]
    event = {"Records": [sqs_event_record(m, queue_arn="arn:q", region="us-east-1") for m in msgs]}
    assert fn.invoke(event) == {"batchItemFailures": [{"itemIdentifier": "m2"}]}


# --- batchItemFailures rules ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("response", "failed"),
    [
        (None, set()),
        ({}, set()),
        ("ok", set()),
        ({"batchItemFailures": None}, set()),
        ({"batchItemFailures": []}, set()),
        ({"batchItemFailures": [{"itemIdentifier": "b"}]}, {"b"}),
        ({"batchItemFailures": [{"itemIdentifier": "c"}, {"itemIdentifier": "a"}]}, {"a", "c"}),
        # Lambda treats these as a failure of the whole batch:
        ({"batchItemFailures": [{"itemIdentifier": ""}]}, {"a", "b", "c"}),
        ({"batchItemFailures": [{"itemIdentifier": None}]}, {"a", "b", "c"}),
        ({"batchItemFailures": [{"itemId": "a"}]}, {"a", "b", "c"}),
        ({"batchItemFailures": [{"itemIdentifier": "zzz"}]}, {"a", "b", "c"}),
        ({"batchItemFailures": "a"}, {"a", "b", "c"}),
    ],
)
def test_failed_item_ids(response: Any, failed: set[str]) -> None:
    assert failed_item_ids(response, ["a", "b", "c"], source="t") == failed


# --- SQS -------------------------------------------------------------------------------------
def _sqs_message(message_id: str, body: str, **extra: Any) -> dict[str, Any]:
    return {
        "MessageId": message_id,
        "ReceiptHandle": f"rh-{message_id}",
        "MD5OfBody": "md5",
        "Body": body,
        "Attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1"},
        **extra,
    }


def test_sqs_event_record_shape() -> None:
    msg = _sqs_message(
        "m1",
        "hello",
        MD5OfMessageAttributes="md5a",
        MessageAttributes={
            "s": {"DataType": "String", "StringValue": "v"},
            "b": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    record = sqs_event_record(msg, queue_arn="arn:aws:sqs:us-east-1:000000000000:q", region="us-east-1")
    assert record == {
        "messageId": "m1",
        "receiptHandle": "rh-m1",
        "body": "hello",
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1"},
        "messageAttributes": {
            "s": {"stringValue": "v", "stringListValues": [], "binaryListValues": [], "dataType": "String"},
            "b": {"binaryValue": "AAE=", "stringListValues": [], "binaryListValues": [], "dataType": "Binary"},
        },
        "md5OfMessageAttributes": "md5a",
        "md5OfBody": "md5",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:q",
        "awsRegion": "us-east-1",
    }
    # The shape powertools parses (its own model of the Lambda SQS event).
    from aws_lambda_powertools.utilities.data_classes import SQSEvent

    parsed = next(iter(SQSEvent({"Records": [record]}).records))
    assert parsed.message_attributes["s"].string_value == "v"
    assert parsed.queue_url.endswith("/000000000000/q")


class FakeSqs:
    def __init__(self, batches: list[list[dict[str, Any]]]) -> None:
        self.batches = batches
        self.deleted: list[str] = []
        self.receive_kwargs: dict[str, Any] = {}

    def get_queue_url(self, QueueName: str) -> dict[str, Any]:
        return {"QueueUrl": f"http://sqs/000000000000/{QueueName}"}

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        return {"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:000000000000:q"}}

    def receive_message(self, **kwargs: Any) -> dict[str, Any]:
        self.receive_kwargs = kwargs
        return {"Messages": self.batches.pop(0)} if self.batches else {}

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> dict[str, Any]:
        self.deleted += [e["ReceiptHandle"] for e in Entries]
        return {"Successful": [{"Id": e["Id"]} for e in Entries]}


def _sqs_source(settings: Settings, handler: Recorder, batches: list[list[dict[str, Any]]]) -> tuple[SqsSource, FakeSqs]:
    fake = FakeSqs(batches)
    clients: Any = SimpleNamespace(settings=settings, sqs=fake)
    return SqsSource(LocalFunction("f", handler, settings), clients, "q", wait_time_seconds=1), fake


def test_sqs_deletes_all_on_success_and_asks_for_all_attributes(settings: Settings) -> None:
    handler = Recorder(None)
    source, fake = _sqs_source(settings, handler, [[_sqs_message("m1", "a"), _sqs_message("m2", "b")]])
    assert source.poll_once() == 2
    assert fake.deleted == ["rh-m1", "rh-m2"]
    assert fake.receive_kwargs["MaxNumberOfMessages"] == 10 and fake.receive_kwargs["WaitTimeSeconds"] == 1
    assert fake.receive_kwargs["MessageSystemAttributeNames"] == ["All"]
    assert [r["body"] for r in handler.events[0]["Records"]] == ["a", "b"]
    assert source.poll_once() == 0


def test_sqs_deletes_only_the_messages_not_reported_failed(settings: Settings) -> None:
    handler = Recorder({"batchItemFailures": [{"itemIdentifier": "m2"}]})
    source, fake = _sqs_source(settings, handler, [[_sqs_message(f"m{i}", "x") for i in (1, 2, 3)]])
    source.poll_once()
    assert fake.deleted == ["rh-m1", "rh-m3"]


def test_sqs_deletes_nothing_when_the_handler_raises(settings: Settings) -> None:
    handler = Recorder(RuntimeError("boom"))
    source, fake = _sqs_source(settings, handler, [[_sqs_message("m1", "x")]])
    assert source.poll_once() == 1
    assert fake.deleted == []


def test_sqs_rejects_out_of_range_settings(settings: Settings) -> None:
    clients: Any = SimpleNamespace(settings=settings, sqs=None)
    fn = LocalFunction("f", Recorder(), settings)
    with pytest.raises(ValueError):
        SqsSource(fn, clients, "q", batch_size=11)
    with pytest.raises(ValueError):
        SqsSource(fn, clients, "q", wait_time_seconds=21)


# --- DynamoDB Streams: event shape -------------------------------------------------------------
def _stream_record(seq: str, pk: str = "k", event_name: str = "INSERT") -> dict[str, Any]:
    # What boto3 returns from GetRecords: datetime and bytes already decoded.
    return {
        "eventID": f"e{seq}",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "Keys": {"pk": {"S": pk}},
            "NewImage": {"pk": {"S": pk}, "blob": {"B": b"\x01\x02"}, "m": {"M": {"bs": {"BS": [b"\xff"]}}}},
            "SequenceNumber": seq,
            "SizeBytes": 12,
            "StreamViewType": "NEW_IMAGE",
        },
    }


def test_stream_event_record_shape() -> None:
    record = stream_event_record(_stream_record("100"), stream_arn=STREAM_ARN, region="us-east-1")
    assert record["eventSourceARN"] == STREAM_ARN
    assert record["eventSource"] == "aws:dynamodb" and record["eventName"] == "INSERT"
    ddb = record["dynamodb"]
    assert ddb["ApproximateCreationDateTime"] == int(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp())
    assert ddb["NewImage"]["blob"] == {"B": "AQI="}
    assert ddb["NewImage"]["m"]["M"]["bs"] == {"BS": ["/w=="]}
    assert ddb["SequenceNumber"] == "100" and ddb["SizeBytes"] == 12 and ddb["StreamViewType"] == "NEW_IMAGE"
    assert "OldImage" not in ddb
    json.dumps(record)
    from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent

    parsed = next(iter(DynamoDBStreamEvent({"Records": [record]}).records))
    assert parsed.dynamodb is not None and parsed.dynamodb.new_image["pk"] == "k"
    # As on AWS, binary stays base64 text in the event (powertools passes it through).
    assert parsed.dynamodb.new_image["blob"] == "AQI="


# --- checkpoints ---------------------------------------------------------------------------------
def test_checkpoint_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "f.checkpoints.json"
    store = CheckpointStore(path)
    store.set_sequence_number(STREAM_ARN, "shard-1", "42")
    store.mark_finished(STREAM_ARN, "shard-0")
    store.set_sequence_number("arn:other", "shard-1", "7")
    again = CheckpointStore(path)
    assert again.sequence_number(STREAM_ARN, "shard-1") == "42"
    assert again.sequence_number("arn:other", "shard-1") == "7"
    assert again.is_finished(STREAM_ARN, "shard-0") and not again.is_finished(STREAM_ARN, "shard-1")
    assert again.stream_arns() == [STREAM_ARN, "arn:other"]
    again.forget_shards_except(STREAM_ARN, {"shard-1"})
    again.forget_stream("arn:other")
    third = CheckpointStore(path)
    assert third.stream_arns() == [STREAM_ARN] and not third.is_finished(STREAM_ARN, "shard-0")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp files left behind


def test_checkpoint_missing_file_is_empty_and_corrupt_file_is_an_error(tmp_path: Path) -> None:
    assert CheckpointStore(tmp_path / "none.json").stream_arns() == []
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CheckpointError):
        CheckpointStore(bad)
    bad.write_text(json.dumps({"version": 99, "streams": {}}))
    with pytest.raises(CheckpointError):
        CheckpointStore(bad)


# --- DynamoDB Streams: delivery logic on a fake stream -------------------------------------------
class FakeStreams:
    """One stream; shards hold records; iterators are (shard, position) tokens."""

    def __init__(self, shards: dict[str, list[dict[str, Any]]], parents: dict[str, str] | None = None) -> None:
        self.shards = shards
        self.parents = parents or {}
        self.closed: set[str] = set()
        self.status = "ENABLED"
        self.expire_next = False
        self.iterator_requests: list[tuple[str, str, str | None]] = []

    def describe_stream(self, StreamArn: str, **_: Any) -> dict[str, Any]:
        shards = []
        for sid in self.shards:
            shard: dict[str, Any] = {"ShardId": sid, "SequenceNumberRange": {}}
            if sid in self.parents:
                shard["ParentShardId"] = self.parents[sid]
            shards.append(shard)
        return {"StreamDescription": {"StreamArn": StreamArn, "StreamStatus": self.status, "Shards": shards}}

    def get_shard_iterator(
        self, StreamArn: str, ShardId: str, ShardIteratorType: str, SequenceNumber: str | None = None
    ) -> dict[str, Any]:
        self.iterator_requests.append((ShardId, ShardIteratorType, SequenceNumber))
        records = self.shards[ShardId]
        seqs = [r["dynamodb"]["SequenceNumber"] for r in records]
        pos = {
            "TRIM_HORIZON": 0,
            "LATEST": len(records),
            "AFTER_SEQUENCE_NUMBER": seqs.index(SequenceNumber) + 1 if SequenceNumber in seqs else 0,
        }[ShardIteratorType]
        return {"ShardIterator": json.dumps([ShardId, pos])}

    def get_records(self, ShardIterator: str, Limit: int) -> dict[str, Any]:
        if self.expire_next:
            self.expire_next = False
            raise _client_error("ExpiredIteratorException")
        sid, pos = json.loads(ShardIterator)
        page = self.shards[sid][pos : pos + Limit]
        nxt = pos + len(page)
        if sid in self.closed and nxt >= len(self.shards[sid]):
            return {"Records": page}
        return {"Records": page, "NextShardIterator": json.dumps([sid, nxt])}


class FakeDynamoDB:
    def describe_table(self, TableName: str) -> dict[str, Any]:
        return {"Table": {"StreamSpecification": {"StreamEnabled": True}, "LatestStreamArn": STREAM_ARN}}


def _stream_source(settings: Settings, handler: Recorder, streams: FakeStreams, **kwargs: Any) -> DynamoDBStreamSource:
    clients: Any = SimpleNamespace(settings=settings, streams=streams, dynamodb=FakeDynamoDB())
    kwargs.setdefault("retry_backoff_s", 0.0)
    return DynamoDBStreamSource(LocalFunction("f", handler, settings), clients, "t", **kwargs)


def _seqs(event: dict[str, Any]) -> list[str]:
    return [r["dynamodb"]["SequenceNumber"] for r in event["Records"]]


def test_stream_batches_in_order_and_checkpoints(settings: Settings) -> None:
    streams = FakeStreams({"s0": [_stream_record(str(i)) for i in range(1, 6)]})
    handler = Recorder()
    source = _stream_source(settings, handler, streams, batch_size=2)
    assert [source.poll_once() for _ in range(4)] == [2, 2, 1, 0]
    assert [_seqs(e) for e in handler.events] == [["1", "2"], ["3", "4"], ["5"]]
    assert handler.events[0]["Records"][0]["eventSourceARN"] == STREAM_ARN
    assert CheckpointStore.for_source(settings, "f").sequence_number(STREAM_ARN, "s0") == "5"


def test_stream_retries_the_same_batch_after_an_exception(settings: Settings) -> None:
    streams = FakeStreams({"s0": [_stream_record(str(i)) for i in range(1, 4)]})
    handler = Recorder(RuntimeError("1"), RuntimeError("2"))
    source = _stream_source(settings, handler, streams)
    for _ in range(4):
        source.poll_once()
    assert [_seqs(e) for e in handler.events] == [["1", "2", "3"]] * 3
    assert source.checkpoints.sequence_number(STREAM_ARN, "s0") == "3"


def test_stream_retry_waits_for_backoff(settings: Settings) -> None:
    streams = FakeStreams({"s0": [_stream_record("1")]})
    handler = Recorder(RuntimeError("1"))
    source = _stream_source(settings, handler, streams, retry_backoff_s=0.3)
    assert source.poll_once() == 1
    assert source.poll_once() == 0  # still backing off
    time.sleep(0.35)
    assert source.poll_once() == 1
    assert len(handler.events) == 2


def test_stream_batch_item_failures_checkpoint_before_first_failure(settings: Settings) -> None:
    streams = FakeStreams({"s0": [_stream_record(str(i)) for i in range(1, 6)]})
    # Records 3 and 4 fail: 1-2 are acknowledged, 3.. is retried (4 is listed too: min wins).
    handler = Recorder({"batchItemFailures": [{"itemIdentifier": "4"}, {"itemIdentifier": "3"}]}, None)
    source = _stream_source(settings, handler, streams)
    source.poll_once()
    assert source.checkpoints.sequence_number(STREAM_ARN, "s0") == "2"
    source.poll_once()
    assert [_seqs(e) for e in handler.events] == [["1", "2", "3", "4", "5"], ["3", "4", "5"]]
    assert source.checkpoints.sequence_number(STREAM_ARN, "s0") == "5"


def test_stream_first_record_failing_checkpoints_nothing(settings: Settings) -> None:
    streams = FakeStreams({"s0": [_stream_record("1"), _stream_record("2")]})
    handler = Recorder({"batchItemFailures": [{"itemIdentifier": "1"}]})
    source = _stream_source(settings, handler, streams)
    source.poll_once()
    assert source.checkpoints.sequence_number(STREAM_ARN, "s0") is None


def test_stream_restart_resumes_after_checkpoint(settings: Settings) -> None:
    streams = FakeStreams({"s0": [_stream_record(str(i)) for i in range(1, 4)]})
    first = Recorder({"batchItemFailures": [{"itemIdentifier": "3"}]})
    _stream_source(settings, first, streams).poll_once()
    second = Recorder()
    _stream_source(settings, second, streams).poll_once()
    assert _seqs(second.events[0]) == ["3"]
    assert ("s0", "AFTER_SEQUENCE_NUMBER", "2") in streams.iterator_requests


def test_stream_latest_without_checkpoint_starts_at_tail(settings: Settings) -> None:
    streams = FakeStreams({"s0": [_stream_record("1")]})
    handler = Recorder()
    source = _stream_source(settings, handler, streams, starting_position="LATEST")
    assert source.poll_once() == 0
    streams.shards["s0"].append(_stream_record("2"))
    assert source.poll_once() == 1
    assert _seqs(handler.events[0]) == ["2"]


def test_stream_expired_iterator_is_reopened_from_checkpoint(settings: Settings) -> None:
    streams = FakeStreams({"s0": [_stream_record("1")]})
    handler = Recorder()
    source = _stream_source(settings, handler, streams)
    source.poll_once()
    streams.shards["s0"].append(_stream_record("2"))
    streams.expire_next = True
    assert source.poll_once() == 1
    assert _seqs(handler.events[1]) == ["2"]
    assert streams.iterator_requests[-1] == ("s0", "AFTER_SEQUENCE_NUMBER", "1")


def test_stream_reads_parent_shard_to_its_end_before_child(settings: Settings) -> None:
    streams = FakeStreams(
        {"child": [_stream_record("20")], "parent": [_stream_record("10"), _stream_record("11")]},
        parents={"child": "parent"},
    )
    streams.closed.add("parent")
    handler = Recorder()
    source = _stream_source(settings, handler, streams, batch_size=1)
    for _ in range(6):
        source.poll_once()
    assert [_seqs(e) for e in handler.events] == [["10"], ["11"], ["20"]]
    assert source.checkpoints.is_finished(STREAM_ARN, "parent")


def test_stream_drained_disabled_stream_is_left(settings: Settings) -> None:
    streams = FakeStreams({"s0": [_stream_record("1")]})
    streams.closed.add("s0")
    streams.status = "DISABLED"
    handler = Recorder()
    source = _stream_source(settings, handler, streams)
    for _ in range(3):
        source.poll_once()
    assert [_seqs(e) for e in handler.events] == [["1"]]
    assert source.checkpoints.is_finished(STREAM_ARN, "s0")


# --- schedule ---------------------------------------------------------------------------------
def test_scheduler_event_shape(settings: Settings) -> None:
    event = scheduler_event(
        schedule_arn="arn:aws:scheduler:us-east-1:000000000000:schedule/default/s",
        when=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        settings=settings,
    )
    assert event["time"] == "2026-01-02T03:04:05Z"
    assert event["detail-type"] == "Scheduled Event" and event["source"] == "aws.scheduler"
    assert event["account"] == "000000000000" and event["region"] == "us-east-1"
    assert event["resources"] == ["arn:aws:scheduler:us-east-1:000000000000:schedule/default/s"]
    assert event["detail"] == {} and event["version"] == "0" and event["id"]


def test_schedule_fires_on_a_grid_and_survives_handler_errors(settings: Settings) -> None:
    handler = Recorder(RuntimeError("first call fails"))
    source = ScheduleSource(LocalFunction("sched", handler, settings), settings, interval_s=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop,))
    thread.start()
    time.sleep(1.05)
    stop.set()
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert 9 <= len(handler.events) <= 11
    assert source.liveness.path.exists()


# --- liveness ----------------------------------------------------------------------------------
def test_liveness(settings: Settings) -> None:
    live = Liveness(settings, "svc")
    assert not is_alive(live.path, 5)
    live.touch()
    assert is_alive(live.path, 5)
    old = time.time() - 60
    os.utime(live.path, (old, old))
    assert not is_alive(live.path, 5)
    assert liveness_main([str(live.path), "5"]) == 1
    live.touch()
    assert liveness_main([str(live.path), "5"]) == 0
