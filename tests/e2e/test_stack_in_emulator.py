"""The production topology in the emulator: `cartflow up --fidelity aws` deploys the generated
CloudFormation template (`cartflow deploy --endpoint-url` underneath), with both images built
from this checkout and pinned by digest (pushed to a local registry), into a MiniStack process
that runs containers. A batch then moves on the
emulator's machinery only, with no cartflow runner process: S3 notification -> SQS mapping ->
ingest (Lambda: the services image under the RIE) -> events table -> debouncer (EventBridge
Scheduler) -> batch chunk -> DynamoDB Streams mapping -> stream trigger (Lambda) -> Step
Functions (the aws rendering) -> ecs:runTask.sync with the Spark image -> KPIs, archive, notices.

The tests run in order and share one stack:
1. the CLI brings the stack up and deploys; the resources carry the digests and the production hygiene (alarms to the
   failure topic, execution logging, the stream mapping's on-failure destination);
2. a job container that exits non-zero, and one that exits 0 without a result, fail their state
   with the retry applied (the aws rendering with a 1 s retry, one-line stand-in job images, its
   own chunk table): done while the debouncer's first tick (a minute after the deploy) is due;
3. fixtures/valid -> KPIs equal to the oracle (upload-to-KPIs time recorded), then archived;
   fixtures/broken is uploaded once the valid batch is claimed, so its tick overlaps the valid run;
4. the broken batch fails: batch failed, notice on SQS naming `cartflow batches retry`, raw file kept.

Measurements go to .cache/e2e-metrics.json (deployed_*).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer

from cartflow.core.config import Settings
from cartflow.core.models import BatchInput
from cartflow.local.deployed import LOCAL_STACK_NAME
from cartflow.local.emulator import free_port
from cartflow.local.stack import SUPERVISOR_LOG, StackRecord, port_of
from tests.conftest import FIXTURES
from tests.e2e.conftest import record_metric
from tests.kpi_check import assert_kpis_equal_oracle
from tests.oracle import batch_from_dir

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

REGION = "us-east-1"
STACK = LOCAL_STACK_NAME  # what `up --fidelity aws` deploys
BUCKET = "cartflow-deployed-e2e"
S = Settings()  # resource names: the spec's defaults, as deployed
BROKEN = FIXTURES / "broken" / "order_lines" / "order_lines_all_invalid.csv"
BROKEN_KEY = f"raw/order_lines/{BROKEN.name}"
_deser = TypeDeserializer()
DONE: dict[str, tuple[str, list[str]]] = {}  # what one test leaves for the next


# ----------------------------------------------------------------------------- fixtures


@dataclass
class Deployed:
    """The stack `cartflow up --fidelity aws --detach` started: its endpoint and logs."""

    endpoint: str
    directory: Path

    @property
    def log_path(self) -> Path:  # the emulator's own log
        return self.directory / "logs" / f"ministack-{port_of(self.endpoint)}.log"

    @property
    def up_log(self) -> str:  # what the supervisor printed: the build, the push, the deploy
        return (self.directory / SUPERVISOR_LOG).read_text(errors="replace")


@pytest.fixture(scope="module")
def emulator(
    docker_engine: str, base_images: None, local_registry: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    """`cartflow up --fidelity aws --detach`, as a user runs it: a containers-mode MiniStack,
    both images built and pushed (to the session's registry), the template deployed."""
    state = tmp_path_factory.mktemp("deployed-state")
    port = free_port()
    # A short debounce window; the bucket of this module (resource names: the spec's defaults).
    env = {**os.environ, "CARTFLOW_STATE_DIR": str(state), "CARTFLOW_BUCKET": BUCKET}
    cli = [sys.executable, "-m", "cartflow"]
    argv = ["up", "--fidelity", "aws", "--detach", "--port", str(port), "--debounce", "5"]
    argv += ["--registry", f"{local_registry}/deployed", "--timeout", "1200"]
    t0 = time.monotonic()
    res = subprocess.run([*cli, *argv], capture_output=True, text=True, env=env, timeout=1300)
    elapsed = time.monotonic() - t0
    directory = state / "stacks" / str(port)
    log = (directory / SUPERVISOR_LOG).read_text(errors="replace") if (directory / SUPERVISOR_LOG).exists() else ""
    assert res.returncode == 0, f"{res.stdout}\n{res.stderr}\n{log[-8000:]}"
    record = StackRecord.load(directory / "stack.json")
    assert record is not None and record.fidelity == "aws", res.stdout
    record_metric("deployed_build_push_deploy_seconds", round(elapsed, 1))
    try:
        yield Deployed(record.endpoint, directory)
    finally:
        down = subprocess.run([*cli, "down", "--port", str(port)], capture_output=True, text=True, env=env, timeout=180)
        assert down.returncode == 0, down.stdout + down.stderr
        # `down` removed the function and task containers this emulator started.
        label = f"ministack.instance={socket.gethostname()}:{port}"
        left = subprocess.run([docker_engine, "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True)
        assert not left.stdout.split(), f"containers left behind: {left.stdout}"


def _client(emulator: Deployed, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=emulator.endpoint,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


@pytest.fixture(scope="module")
def aws(emulator: Deployed) -> dict[str, Any]:
    services = ("s3", "dynamodb", "sqs", "sns", "stepfunctions", "lambda", "ecs", "cloudwatch", "logs")
    return {name: _client(emulator, name) for name in services}


@pytest.fixture(scope="module")
def deployed(emulator: Deployed) -> dict[str, Any]:
    return {"output": emulator.up_log}


@pytest.fixture(scope="module")
def notices(deployed: dict[str, Any], aws: dict[str, Any]) -> str:
    """An SQS queue subscribed to the failure topic (how the test receives alerts)."""
    sqs, sns = aws["sqs"], aws["sns"]
    url: str = sqs.create_queue(QueueName="e2e-deployed-failure-notices")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topic = f"arn:aws:sns:{REGION}:000000000000:{S.failure_topic}"
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})
    return url


# ----------------------------------------------------------------------------- helpers


def scan(ddb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in ddb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items += [{k: _deser.deserialize(v) for k, v in i.items()} for i in page["Items"]]
    return items


def chunks(ddb: Any) -> list[dict[str, Any]]:
    rows = scan(ddb, S.batch_chunks_table)
    return [c for c in rows if c.get("group_key") != "#lock" and "status" in c and "file_paths" in c]


def diagnostics(aws: dict[str, Any], emulator: Deployed) -> str:
    """What a failed wait prints: executions, the functions' and the job's logs, the emulator's log."""
    out = []
    sfn = aws["stepfunctions"]
    for m in sfn.list_state_machines()["stateMachines"]:
        for e in sfn.list_executions(stateMachineArn=m["stateMachineArn"])["executions"]:
            d = sfn.describe_execution(executionArn=e["executionArn"])
            out.append(f"{m['name']} {e['status']} {d.get('error')} {str(d.get('cause'))[:1500]}")
    logs = aws["logs"]
    for group in logs.describe_log_groups()["logGroups"]:
        for stream in logs.describe_log_streams(logGroupName=group["logGroupName"])["logStreams"][-3:]:
            events = logs.get_log_events(logGroupName=group["logGroupName"], logStreamName=stream["logStreamName"])["events"]
            out.append(f"--- {group['logGroupName']} {stream['logStreamName']}\n" + "\n".join(e["message"] for e in events[-30:]))
    out.append("--- emulator\n" + emulator.log_path.read_text()[-6000:])
    return "\n".join(out)[-30000:]


def wait_for(predicate: Any, timeout: float, what: str, aws: dict[str, Any], emulator: Deployed) -> Any:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{diagnostics(aws, emulator)}")


def job_seconds(sfn: Any, execution_arn: str) -> dict[str, float]:
    """Seconds of the execution's two ecs:runTask.sync states (a cold Spark container each)."""
    history = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
    run = "arn:aws:states:::ecs:runTask.sync"
    scheduled = [e["timestamp"] for e in history if e.get("taskScheduledEventDetails", {}).get("resource") == run]
    ended = [e["timestamp"] for e in history if e.get("taskSucceededEventDetails", {}).get("resource") == run]
    return {
        job: round((b - a).total_seconds(), 1) for job, a, b in zip(("validate", "transform"), scheduled, ended, strict=False)
    }


def upload(s3: Any, folder: Path) -> list[str]:
    keys = []
    for path in sorted(folder.rglob("*.csv")):
        key = "raw/" + path.relative_to(folder).as_posix()
        s3.upload_file(str(path), BUCKET, key)
        keys.append(key)
    return keys


# ----------------------------------------------------------------------------- 1. deploy


def test_the_cli_deploys_the_template_with_the_images_by_digest(deployed: dict[str, Any], aws: dict[str, Any]) -> None:
    output = " ".join(deployed["output"].split())
    assert f"stack {STACK} deployed" in output and "template (" in output
    functions = {f["FunctionName"]: f for f in aws["lambda"].list_functions()["Functions"]}
    image = aws["lambda"].get_function(FunctionName="cartflow-ingest")["Code"]["ImageUri"]
    assert "/deployed/cartflow-services@sha256:" in image
    assert {"cartflow-ingest", "cartflow-debouncer", "cartflow-stream-trigger", "cartflow-controller"} <= set(functions)
    td = aws["ecs"].describe_task_definition(taskDefinition=S.ecs_task_definition)["taskDefinition"]
    assert "/deployed/cartflow-spark@sha256:" in td["containerDefinitions"][0]["image"]
    # Production hygiene, deployed by the same template.
    alarms = aws["cloudwatch"].describe_alarms()["MetricAlarms"]
    topic = f"arn:aws:sns:{REGION}:000000000000:{S.failure_topic}"
    assert len(alarms) == 8 and all(a["AlarmActions"] == [topic] for a in alarms)
    # (MiniStack keeps the machine's LoggingConfiguration in CloudFormation's spelling and writes
    # no execution logs: the setting itself is checked offline, tests/unit/test_deploy_template.py.)
    groups = aws["logs"].describe_log_groups(logGroupNamePrefix="/aws/vendedlogs/states/")["logGroups"]
    assert [g["logGroupName"] for g in groups] == [f"/aws/vendedlogs/states/{S.state_machine}"]
    mappings = aws["lambda"].list_event_source_mappings(FunctionName="cartflow-stream-trigger")["EventSourceMappings"]
    assert mappings[0]["DestinationConfig"]["OnFailure"]["Destination"].endswith(":cartflow-stream-trigger-failures")


# ----------------------------------------------------------------------------- 2. exit code / no result


def _stand_in_image(docker: str, exit_code: int) -> str:
    """A job image whose entry point ignores its arguments and exits with ``exit_code``."""
    tag = f"cartflow-e2e-job-exit:{exit_code}"
    dockerfile = f'FROM python:3.11-slim-bookworm\nENTRYPOINT ["python", "-c", "import sys; sys.exit({exit_code})"]\n'
    res = subprocess.run([docker, "build", "-q", "-t", tag, "-"], input=dockerfile, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return tag


@pytest.mark.parametrize(("exit_code", "error"), [(3, "cartflow.JobFailed"), (0, "cartflow.JobResultMissing")])
def test_a_job_that_exits_non_zero_or_puts_no_result_fails_its_state_after_retries(
    exit_code: int, error: str, docker_engine: str, deployed: dict[str, Any], aws: dict[str, Any], emulator: Deployed
) -> None:
    """The deployed machine's Retry waits 30/60/120 s; this one is the same aws rendering with a
    1 s retry, on a task definition whose job is a stand-in, and runs the whole failure path."""
    from orchestrator.render import build_definition

    ecs, sfn, ddb = aws["ecs"], aws["stepfunctions"], aws["dynamodb"]
    # Its own chunk table: the deployed controller and stream trigger never see these batches.
    chunk_table = f"e2e-exit-{exit_code}-chunks"
    ddb.create_table(
        TableName=chunk_table,
        KeySchema=[{"AttributeName": "group_key", "KeyType": "HASH"}, {"AttributeName": "batch_id", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "group_key", "AttributeType": "S"},
            {"AttributeName": "batch_id", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    family = f"cartflow-e2e-exit-{exit_code}"
    ecs.register_task_definition(
        family=family,
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="256",
        memory="512",
        containerDefinitions=[
            {"name": S.ecs_container_name, "image": _stand_in_image(docker_engine, exit_code), "essential": True}
        ],
    )
    topics = {t["TopicArn"].rsplit(":", 1)[1]: t["TopicArn"] for t in aws["sns"].list_topics()["Topics"]}
    definition = build_definition(
        "aws",
        {
            "bucket": BUCKET,
            "batch_chunks_table": chunk_table,
            "success_topic_arn": topics[S.success_topic],
            "failure_topic_arn": topics[S.failure_topic],
            "retry_interval_seconds": 1,
            "retry_max_attempts": 1,
            "retry_backoff_rate": 1.0,
            "ecs_cluster": S.ecs_cluster,
            "ecs_task_definition": family,
            "ecs_container_name": S.ecs_container_name,
            "job_results_table": S.job_results_table,
            "subnets": ["subnet-e2e"],
            "security_groups": ["sg-e2e"],
            "job_timeout_seconds": 120,
        },
    )
    arn = sfn.create_state_machine(
        name=f"e2e-exit-{exit_code}", definition=json.dumps(definition), roleArn="arn:aws:iam::000000000000:role/e2e"
    )["stateMachineArn"]
    batch = BatchInput.model_validate(
        {"batch_id": f"b-e2e-exit-{exit_code}", "group_key": "e2e-exit", "bucket": BUCKET, "processing_date": "2026-01-01"}
    )
    key = {"group_key": {"S": batch.group_key}, "batch_id": {"S": batch.batch_id}}
    ddb.put_item(TableName=chunk_table, Item={**key, "status": {"S": "processing"}})
    execution = sfn.start_execution(stateMachineArn=arn, input=batch.model_dump_json())["executionArn"]

    def ended() -> Any:
        d = sfn.describe_execution(executionArn=execution)
        return d if d["status"] != "RUNNING" else None

    final = wait_for(ended, 240, f"the exit-{exit_code} execution to end", aws, emulator)
    assert (final["status"], final["error"]) == ("FAILED", "cartflow.BatchFailed"), final
    history = sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
    runs = [e for e in history if e.get("taskScheduledEventDetails", {}).get("resource") == "arn:aws:states:::ecs:runTask.sync"]
    assert len(runs) == 2  # the first attempt and the one retry
    item = ddb.get_item(TableName=chunk_table, Key=key, ConsistentRead=True)["Item"]
    assert (item["status"]["S"], item["failed_step"]["S"]) == ("failed", "Validate")
    assert json.loads(item["error"]["S"])["Error"] == error


# ----------------------------------------------------------------------------- 3. valid -> KPIs


def test_valid_fixtures_reach_kpis_equal_to_the_oracle(
    deployed: dict[str, Any], notices: str, aws: dict[str, Any], emulator: Deployed
) -> None:
    s3, ddb = aws["s3"], aws["dynamodb"]
    t0 = time.monotonic()
    keys = upload(s3, FIXTURES / "valid")
    uris = {f"s3://{BUCKET}/{k}" for k in keys}

    def claimed() -> Any:
        return next((c for c in chunks(ddb) if set(c["file_paths"]) == uris), None)

    valid = wait_for(claimed, 180, "the valid files' batch chunk (debouncer tick)", aws, emulator)
    record_metric("deployed_upload_to_batch_seconds", round(time.monotonic() - t0, 1))  # window + Scheduler tick
    # The broken file's window and tick now overlap the valid run (it waits for the lock).
    s3.upload_file(str(BROKEN), BUCKET, BROKEN_KEY)

    def done() -> Any:
        c = next(c for c in chunks(ddb) if c["batch_id"] == valid["batch_id"])
        assert c["status"] != "failed", f"the valid batch failed: {c}\n{diagnostics(aws, emulator)}"
        return c if c["status"] == "done" else None

    final = wait_for(done, 600, "the valid batch to be done", aws, emulator)
    record_metric("deployed_upload_to_kpis_seconds", round(time.monotonic() - t0, 1))
    record_metric("deployed_job_seconds", job_seconds(aws["stepfunctions"], final["execution_arn"]))
    assert_kpis_equal_oracle(
        scan(ddb, S.order_kpis_table), scan(ddb, S.category_kpis_table), [batch_from_dir(FIXTURES / "valid")]
    )
    # The jobs ran as ECS tasks of the Spark image and handed their results over the results table.
    result = ddb.get_item(TableName=S.job_results_table, Key={"batch_id": {"S": valid["batch_id"]}, "job": {"S": "transform"}})
    assert json.loads(result["Item"]["document"]["S"])["batch_id"] == valid["batch_id"]
    DONE["valid"] = valid["batch_id"], keys


def test_the_valid_batch_is_archived(aws: dict[str, Any]) -> None:
    """Every upload of the valid batch moved from raw/ to processed/<batch_id>/."""
    assert "valid" in DONE, "the valid batch did not finish"
    batch_id, keys = DONE["valid"]
    s3 = aws["s3"]
    archived = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"processed/{batch_id}/").get("Contents", [])}
    assert archived == {f"processed/{batch_id}/{k.removeprefix('raw/')}" for k in keys}
    left = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="raw/").get("Contents", [])}
    assert not left & set(keys)


# ----------------------------------------------------------------------------- 4. broken -> failure path


def test_a_broken_batch_fails_with_a_notice_and_keeps_its_raw_file(notices: str, aws: dict[str, Any], emulator: Deployed) -> None:
    ddb, sqs, s3 = aws["dynamodb"], aws["sqs"], aws["s3"]

    def failed() -> Any:
        for c in chunks(ddb):
            if any(p.endswith(BROKEN_KEY) for p in c["file_paths"]):
                assert c["status"] != "done", f"the broken file's batch succeeded: {c}"
                return c if c["status"] == "failed" else None
        return None

    chunk = wait_for(failed, 600, "the broken batch to fail", aws, emulator)
    assert chunk.get("failed_step") == "Validate" and "cartflow.ValidationFailed" in chunk["error"]

    def notice() -> Any:
        msgs = sqs.receive_message(QueueUrl=notices, WaitTimeSeconds=2, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(m["Body"]) for m in msgs if chunk["batch_id"] in m["Body"]]

    [body, *_] = wait_for(notice, 60, "the failure notice", aws, emulator)
    assert body["event"] == "batch_failed"
    assert body["retry_command"] == f"cartflow batches retry {chunk['batch_id']}"
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=BROKEN_KEY).get("KeyCount", 0) == 1  # kept for a fix and retry
