"""The rendered state machine, run for real on MiniStack.

This tests the ASL flow, not Spark: the real ``SparkRunner`` serves the two Activities but
with stub job callables. conftest's fixtures start a MiniStack process of this module's own
on a free port and apply the resource spec (which creates the state machine from
orchestrator/render.py's local rendering).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from cartflow.core.aws import AwsClients
from cartflow.core.config import Settings
from cartflow.core.models import BatchInput, RawFile, TableResult, TransformResult, ValidationResult
from cartflow.local.spark_runner import SparkRunner
from orchestrator.render import build_definition, params_from_settings

pytestmark = pytest.mark.integration

LOCK_KEY = {"group_key": {"S": "#lock"}, "batch_id": {"S": "#inflight"}}
EXECUTION_TIMEOUT = 60.0


@dataclass
class Stack:
    settings: Settings
    clients: AwsClients
    state_machine_arn: str
    success_queue_url: str
    failure_queue_url: str


def _queue_for_topic(clients: AwsClients, topic_arn: str, name: str) -> str:
    url = clients.sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    clients.sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    return url


def _create_state_machine(clients: AwsClients, name: str, definition: dict[str, Any]) -> str:
    return clients.sfn.create_state_machine(
        name=name,
        definition=json.dumps(definition),
        roleArn="arn:aws:iam::000000000000:role/cartflow-sfn",
    )["stateMachineArn"]


@pytest.fixture(scope="module")
def stack(settings: Settings, stack_resources: dict[str, str]) -> Stack:
    """The resource spec applied (conftest: own MiniStack on a free port, bucket, tables, topics,
    activities and the *local* rendering of our state machine), plus a queue on each topic."""
    clients = AwsClients(settings)
    definition = json.loads(clients.sfn.describe_state_machine(stateMachineArn=settings.state_machine_arn)["definition"])
    assert definition == build_definition("local", params_from_settings(settings, "local"))
    return Stack(
        settings=settings,
        clients=clients,
        state_machine_arn=settings.state_machine_arn,
        success_queue_url=_queue_for_topic(clients, settings.success_topic_arn, "sm-test-success"),
        failure_queue_url=_queue_for_topic(clients, settings.failure_topic_arn, "sm-test-failure"),
    )


# ----------------------------------------------------------------------------- the worker

JobFn = Callable[[BatchInput], Any]


def passed(batch: BatchInput) -> ValidationResult:
    return ValidationResult(
        batch_id=batch.batch_id,
        processing_date=batch.processing_date,
        status="passed",
        shape="tables",
        tables={"orders": TableResult(input_rows=3, valid_rows=3)},
        archive=batch.archive,  # the real job plans the archive (processed/ or rejected/)
    )


def transformed(batch: BatchInput) -> TransformResult:
    return TransformResult(batch_id=batch.batch_id, order_dates=["2026-11-01"], category_kpi_rows=4, order_kpi_rows=1)


@dataclass
class StubJobs:
    """What the stub validate/transform do; each test sets its own behaviour."""

    validate: JobFn = field(default=passed)
    transform: JobFn = field(default=transformed)


class CountingSfn:
    """Proxy of the SFN client that counts GetActivityTask deliveries per activity ARN."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.deliveries: Counter[str] = Counter()

    def get_activity_task(self, **kwargs: Any) -> dict[str, Any]:
        response = self._inner.get_activity_task(**kwargs)
        if response.get("taskToken"):
            self.deliveries[kwargs["activityArn"]] += 1
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[tuple[StubJobs, CountingSfn]]:
    stubs = StubJobs()
    sfn = CountingSfn(stack.clients.client("stepfunctions"))  # own client: long polls block it
    runner = SparkRunner(
        stack.settings,
        sfn,
        jobs={"validate": lambda _s, _c, b: stubs.validate(b), "transform": lambda _s, _c, b: stubs.transform(b)},
        spark_factory=lambda: None,
        heartbeat_seconds=1.0,
    )
    runner.start()
    yield stubs, sfn
    # The pollers sit in a <= 60 s long poll; they are daemons and die with MiniStack.
    runner.stop()


@pytest.fixture
def jobs(worker: tuple[StubJobs, CountingSfn]) -> Iterator[StubJobs]:
    stubs, _ = worker
    yield stubs
    stubs.validate, stubs.transform = StubJobs().validate, StubJobs().transform


# ----------------------------------------------------------------------------- helpers


def _new_batch(stack: Stack, stem: str = "") -> BatchInput:
    """Raw objects, a processing batch_chunks item and the lock held by this batch."""
    s, c = stack.settings, stack.clients
    batch_id = f"b-{uuid.uuid4().hex[:12]}"
    keys = [f"raw/orders/{stem}{batch_id}.csv", f"raw/order_items/{stem}{batch_id}.csv"]
    for key in keys:
        c.s3.put_object(Bucket=s.bucket, Key=key, Body=b"id\n1\n")
    batch = BatchInput.from_files(
        batch_id=batch_id,
        group_key="g-test",
        bucket=s.bucket,
        processing_date="2026-11-01",
        files=[RawFile.parse(s.bucket, k) for k in keys],
    )
    c.dynamodb.put_item(
        TableName=s.batch_chunks_table,
        Item={
            "group_key": {"S": batch.group_key},
            "batch_id": {"S": batch_id},
            "status": {"S": "processing"},
            "created_at": {"N": str(int(time.time() * 1000))},
            "file_paths": {"L": [{"S": f"s3://{s.bucket}/{k}"} for k in keys]},
        },
    )
    c.dynamodb.put_item(TableName=s.batch_chunks_table, Item={**LOCK_KEY, "holder": {"S": batch_id}})
    return batch


def _run(stack: Stack, batch: BatchInput, state_machine_arn: str | None = None) -> dict[str, Any]:
    sfn = stack.clients.sfn
    arn = sfn.start_execution(
        stateMachineArn=state_machine_arn or stack.state_machine_arn,
        name=batch.batch_id,
        input=batch.model_dump_json(),
    )["executionArn"]
    deadline = time.monotonic() + EXECUTION_TIMEOUT
    while time.monotonic() < deadline:
        desc = sfn.describe_execution(executionArn=arn)
        if desc["status"] != "RUNNING":
            return desc
        time.sleep(0.2)
    raise AssertionError(f"execution {arn} still RUNNING after {EXECUTION_TIMEOUT} s")


def _chunk(stack: Stack, batch: BatchInput) -> dict[str, Any]:
    return stack.clients.dynamodb.get_item(
        TableName=stack.settings.batch_chunks_table,
        Key={"group_key": {"S": batch.group_key}, "batch_id": {"S": batch.batch_id}},
        ConsistentRead=True,
    )["Item"]


def _lock(stack: Stack) -> dict[str, Any]:
    return stack.clients.dynamodb.get_item(TableName=stack.settings.batch_chunks_table, Key=LOCK_KEY, ConsistentRead=True).get(
        "Item", {}
    )


def _notice(stack: Stack, queue_url: str, batch_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The SNS notice (unwrapped from its SQS envelope) about ``batch_id``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = stack.clients.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for msg in resp.get("Messages", []):
            body = json.loads(msg["Body"])
            notice = json.loads(body["Message"]) if "Message" in body else body
            if notice.get("batch_id") == batch_id:
                stack.clients.sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=msg["ReceiptHandle"])
                return notice
    raise AssertionError(f"no notice for {batch_id} on {queue_url}")


def _keys(stack: Stack, prefix: str) -> set[str]:
    resp = stack.clients.s3.list_objects_v2(Bucket=stack.settings.bucket, Prefix=prefix)
    return {o["Key"] for o in resp.get("Contents", [])}


def _path(stack: Stack, desc: dict[str, Any]) -> list[str]:
    """The top-level states the execution entered, in order (nested Map/Parallel states left out)."""
    top = set(build_definition("local", params_from_settings(stack.settings, "local"))["States"])
    events = stack.clients.sfn.get_execution_history(executionArn=desc["executionArn"], maxResults=1000)["events"]
    names = [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]
    return [n for n in names if n in top]


# ----------------------------------------------------------------------------- tests


def test_success_archives_marks_done_releases_lock_and_notifies(stack: Stack, jobs: StubJobs) -> None:
    batch = _new_batch(stack)
    started = time.monotonic()
    desc = _run(stack, batch)
    print(f"success path: {time.monotonic() - started:.1f} s")

    assert desc["status"] == "SUCCEEDED", desc
    assert _path(stack, desc) == [
        "CheckCurrent",
        "StageRawFiles",
        "RouteValidate",
        "Validate",
        "CheckValidation",
        "RouteTransform",
        "Transform",
        "ArchiveRawFiles",
        "DeleteRawFiles",
        "MarkDone",
        "ReleaseLock",
        "NotifySuccess",
    ]
    output = json.loads(desc["output"])
    assert output["validation"] == json.loads(passed(batch).model_dump_json())
    assert output["transform"] == json.loads(transformed(batch).model_dump_json())
    assert not {a.source_key for a in batch.archive} & _keys(stack, "raw/")
    assert {a.archive_key for a in batch.archive} <= _keys(stack, f"processed/{batch.batch_id}/")
    chunk = _chunk(stack, batch)
    assert chunk["status"] == {"S": "done"}
    assert "finished_at" in chunk
    assert "holder" not in _lock(stack)
    notice = _notice(stack, stack.success_queue_url, batch.batch_id)
    assert notice["event"] == "batch_succeeded"
    assert (notice["category_kpi_rows"], notice["order_kpi_rows"]) == (4, 1)
    assert notice["validation"]["orders"]["valid_rows"] == 3


def test_keys_as_people_name_exports_are_archived(stack: Stack, jobs: StubJobs) -> None:
    """Spaces, parentheses and unicode in a key: CopyObject gets the URL-encoded source."""
    batch = _new_batch(stack, stem="2025 08 01 export (1) ünïcode ")
    desc = _run(stack, batch)
    assert desc["status"] == "SUCCEEDED", desc
    assert not {a.source_key for a in batch.archive} & _keys(stack, "raw/")
    assert {a.archive_key for a in batch.archive} <= _keys(stack, f"processed/{batch.batch_id}/")


def test_an_overwrite_while_in_flight_is_neither_read_nor_archived_nor_deleted(stack: Stack, jobs: StubJobs) -> None:
    """The batch holds version 1 of a key; version 2 lands before the jobs read it. The
    jobs see version 1 (staged), the archive gets version 1, raw/ keeps only version 2."""
    s3, bucket = stack.clients.s3, stack.settings.bucket
    key = f"raw/orders/overwrite-{uuid.uuid4().hex[:8]}.csv"
    v1 = s3.put_object(Bucket=bucket, Key=key, Body=b"id\n1\n")["VersionId"]
    batch = _new_batch(stack)
    batch = BatchInput.from_files(
        batch_id=batch.batch_id,
        group_key=batch.group_key,
        bucket=bucket,
        processing_date=batch.processing_date,
        files=[RawFile.parse(bucket, key)],
        versions={f"s3://{bucket}/{key}": v1},
    )
    v2 = s3.put_object(Bucket=bucket, Key=key, Body=b"id\n2\n")["VersionId"]
    seen: list[bytes] = []

    def read_staged(b: BatchInput) -> ValidationResult:
        staged = b.read_uri(f"s3://{bucket}/{key}").split("/", 3)[-1]
        seen.append(s3.get_object(Bucket=bucket, Key=staged)["Body"].read())
        return passed(b)

    jobs.validate = read_staged
    desc = _run(stack, batch)
    assert desc["status"] == "SUCCEEDED", desc
    assert seen == [b"id\n1\n"]
    (item,) = batch.archive
    assert s3.get_object(Bucket=bucket, Key=item.archive_key)["Body"].read() == b"id\n1\n"
    versions = s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
    assert [(v["VersionId"], v["IsLatest"]) for v in versions] == [(v2, True)]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"id\n2\n"
    assert not _keys(stack, f"staging/{batch.batch_id}/")


def test_validation_failed_notifies_marks_failed_and_keeps_raw_files(stack: Stack, jobs: StubJobs) -> None:
    jobs.validate = lambda b: passed(b).model_copy(update={"status": "failed", "errors": ["orders: missing order_id"]})
    transform_calls: list[str] = []
    jobs.transform = lambda b: transform_calls.append(b.batch_id) or transformed(b)
    batch = _new_batch(stack)
    desc = _run(stack, batch)

    assert desc["status"] == "FAILED", desc
    assert _path(stack, desc) == [
        "CheckCurrent",
        "StageRawFiles",
        "RouteValidate",
        "Validate",
        "CheckValidation",
        "ValidationRejected",
        "NotifyFailure",
        "MarkFailed",
        "ReleaseLockAfterFailure",
        "BatchFailed",
    ]
    assert desc.get("error") == "cartflow.BatchFailed"
    assert desc.get("cause") == f"batch {batch.batch_id} failed at Validate: cartflow.ValidationFailed"
    assert transform_calls == []
    notice = _notice(stack, stack.failure_queue_url, batch.batch_id)
    assert notice["event"] == "batch_failed"
    assert notice["failure"]["step"] == "Validate"
    assert notice["failure"]["error"]["Error"] == "cartflow.ValidationFailed"
    assert "missing order_id" in notice["failure"]["error"]["Cause"]
    assert notice["failure"]["validation"]["errors"] == ["orders: missing order_id"]
    chunk = _chunk(stack, batch)
    assert chunk["status"] == {"S": "failed"}
    assert chunk["failed_step"] == {"S": "Validate"}
    assert "cartflow.ValidationFailed" in chunk["error"]["S"]
    assert {a.source_key for a in batch.archive} <= _keys(stack, "raw/")
    assert not _keys(stack, f"processed/{batch.batch_id}/")
    assert "holder" not in _lock(stack)


def test_transform_failing_is_retried_then_takes_the_failure_path(
    stack: Stack, jobs: StubJobs, worker: tuple[StubJobs, CountingSfn]
) -> None:
    _, sfn = worker

    def boom(_b: BatchInput) -> TransformResult:
        raise RuntimeError("executor lost")

    jobs.transform = boom
    transform_arn = stack.settings.activity_arn(stack.settings.transform_activity)
    before = sfn.deliveries[transform_arn]
    batch = _new_batch(stack)
    started = time.monotonic()
    desc = _run(stack, batch)
    print(f"transform retry path: {time.monotonic() - started:.1f} s")

    assert desc["status"] == "FAILED", desc
    assert _path(stack, desc) == [
        "CheckCurrent",
        "StageRawFiles",
        "RouteValidate",
        "Validate",
        "CheckValidation",
        "RouteTransform",
        "Transform",
        "TransformFailed",
        "NotifyFailure",
        "MarkFailed",
        "ReleaseLockAfterFailure",
        "BatchFailed",
    ]
    assert sfn.deliveries[transform_arn] - before == 1 + stack.settings.job_retry_max_attempts
    notice = _notice(stack, stack.failure_queue_url, batch.batch_id)
    assert notice["failure"]["step"] == "Transform"
    assert notice["failure"]["error"] == {"Error": "cartflow.JobFailed", "Cause": "RuntimeError: executor lost"}
    assert _chunk(stack, batch)["status"] == {"S": "failed"}
    assert {a.source_key for a in batch.archive} <= _keys(stack, "raw/")
    assert "holder" not in _lock(stack)


def test_lock_already_released_and_chunk_moved_on_still_finishes(stack: Stack, jobs: StubJobs) -> None:
    """The controller may release the lock / mark the chunk first: conditional writes must not wedge us."""
    batch = _new_batch(stack)
    stack.clients.dynamodb.put_item(
        TableName=stack.settings.batch_chunks_table, Item={**LOCK_KEY, "holder": {"S": "someone-else"}}
    )
    desc = _run(stack, batch)
    assert desc["status"] == "SUCCEEDED", desc
    assert _lock(stack)["holder"] == {"S": "someone-else"}  # not ours: left alone
    _notice(stack, stack.success_queue_url, batch.batch_id)

    batch = _new_batch(stack)

    def validate_while_the_controller_moves_the_chunk(b: BatchInput) -> ValidationResult:
        _set_status(stack, b, "failed")  # e.g. the controller timed the execution out meanwhile
        return passed(b)

    jobs.validate = validate_while_the_controller_moves_the_chunk
    desc = _run(stack, batch)
    assert desc["status"] == "FAILED", desc  # MarkDone's condition failed -> failure path
    notice = _notice(stack, stack.failure_queue_url, batch.batch_id)
    assert notice["failure"]["step"] == "MarkDone"
    assert notice["failure"]["error"]["Error"] == "DynamoDB.ConditionalCheckFailedException"
    assert "holder" not in _lock(stack)


def test_a_duplicate_execution_of_a_batch_not_processing_ends_quietly(stack: Stack, jobs: StubJobs) -> None:
    batch = _new_batch(stack)
    _set_status(stack, batch, "done")
    desc = _run(stack, batch)

    assert desc["status"] == "SUCCEEDED", desc
    assert _path(stack, desc) == ["CheckCurrent", "NotCurrent"]
    assert {a.source_key for a in batch.archive} <= _keys(stack, "raw/")  # nothing archived
    assert _chunk(stack, batch)["status"] == {"S": "done"}
    with pytest.raises(AssertionError, match="no notice"):
        _notice(stack, stack.failure_queue_url, batch.batch_id, timeout=2)


def _set_status(stack: Stack, batch: BatchInput, status: str) -> None:
    stack.clients.dynamodb.update_item(
        TableName=stack.settings.batch_chunks_table,
        Key={"group_key": {"S": batch.group_key}, "batch_id": {"S": batch.batch_id}},
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": status}},
    )


def test_failed_copy_leaves_every_raw_file_in_place(stack: Stack, jobs: StubJobs) -> None:
    batch = _new_batch(stack)
    missing = batch.archive[0]
    stack.clients.s3.delete_object(Bucket=stack.settings.bucket, Key=missing.source_key)
    desc = _run(stack, batch)

    assert desc["status"] == "FAILED", desc
    assert _path(stack, desc)[7:] == [
        "ArchiveRawFiles",
        "ArchiveFailed",
        "NotifyFailure",
        "MarkFailed",
        "ReleaseLockAfterFailure",
        "BatchFailed",
    ]
    notice = _notice(stack, stack.failure_queue_url, batch.batch_id)
    assert notice["failure"]["step"] == "ArchiveRawFiles"
    assert {a.source_key for a in batch.archive[1:]} <= _keys(stack, "raw/")  # nothing deleted
    assert _chunk(stack, batch)["status"] == {"S": "failed"}


# ----------------------------------------------------------------------------- AWS job states


def _fake_worker(sfn: Any, arn: str, respond: Callable[[dict[str, Any]], dict[str, Any]], seen: list[Any]) -> None:
    while True:
        try:
            task = sfn.get_activity_task(activityArn=arn, workerName="fake")
        except Exception:  # MiniStack gone at the end of the module
            return
        if task.get("taskToken"):
            payload = json.loads(task["input"])
            seen.append(payload)
            sfn.send_task_success(taskToken=task["taskToken"], output=json.dumps(respond(payload)))


def test_aws_job_states_data_flow_with_stubbed_ecs(stack: Stack, jobs: StubJobs) -> None:
    """The AWS rendering with runTask.sync swapped for an Activity (here no container runs): proves
    the Parallel -> exit-code Choice -> dynamodb:getItem of the job's result -> StringToJson ->
    Pass unwrap -> OutputPath $[0] chain leaves the same state as the local Activity, and the
    ECS command. The stub answers with the shape AWS returns (the stopped task, exit code 0)."""
    s, c = stack.settings, stack.clients
    params = {
        **params_from_settings(s, "aws"),
        "subnets": ["subnet-1"],
        "security_groups": ["sg-1"],
        "retry_interval_seconds": 1,
        "retry_max_attempts": 0,
    }
    definition = build_definition("aws", params)
    ecs_arn = c.sfn.create_activity(name="fake-ecs-run-task")["activityArn"]
    for job in ("Validate", "Transform"):
        branch = definition["States"][job]["Branches"][0]["States"]
        assert branch[f"{job}RunTask"]["Resource"] == "arn:aws:states:::ecs:runTask.sync"
        assert branch[f"{job}ReadResult"]["Resource"] == "arn:aws:states:::dynamodb:getItem"
        branch[f"{job}RunTask"]["Resource"] = ecs_arn
    sm_arn = _create_state_machine(c, "cartflow-aws-dataflow", definition)

    batch = _new_batch(stack)
    documents = {
        "validate": passed(batch).model_dump_json(),
        "transform": transformed(batch).model_dump_json(),
    }
    for job, document in documents.items():  # what spark.jobs.__main__.publish_result puts
        c.dynamodb.put_item(
            TableName=s.job_results_table,
            Item={"batch_id": {"S": batch.batch_id}, "job": {"S": job}, "document": {"S": document}},
        )
    ecs_calls: list[Any] = []

    def stopped_task(_: dict[str, Any]) -> dict[str, Any]:
        return {"LastStatus": "STOPPED", "Containers": [{"Name": "spark-job", "ExitCode": 0}]}

    threading.Thread(target=_fake_worker, args=(c.client("stepfunctions"), ecs_arn, stopped_task, ecs_calls), daemon=True).start()

    desc = _run(stack, batch, sm_arn)
    assert desc["status"] == "SUCCEEDED", desc
    output = json.loads(desc["output"])
    assert output["validation"] == json.loads(documents["validate"])
    assert output["transform"] == json.loads(documents["transform"])
    assert set(output) == set(json.loads(batch.model_dump_json())) | {"validation", "transform"}

    commands = [call["Overrides"]["ContainerOverrides"][0]["Command"] for call in ecs_calls]
    # Arguments to the Spark image's ENTRYPOINT (python -m spark.jobs).
    assert [cmd[:2] for cmd in commands] == [["validate", "--batch"], ["transform", "--batch"]]
    # The job gets the batch without its archive list (ECS caps overrides at 8 KiB).
    assert all(BatchInput.model_validate_json(cmd[2]) == batch.model_copy(update={"archive": []}) for cmd in commands)
    assert all("archive" not in json.loads(cmd[2]) for cmd in commands)
    assert ecs_calls[0]["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"] == ["subnet-1"]
    assert _chunk(stack, batch)["status"] == {"S": "done"}
    _notice(stack, stack.success_queue_url, batch.batch_id)
