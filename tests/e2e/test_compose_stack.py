"""The compose target end to end: build the images, bring the stack up with `docker compose`
(testcontainers' DockerCompose), seed the valid fixtures with the one-shot seeder, wait for
KPIs in DynamoDB (through the published 127.0.0.1 port, plain boto3) and compare them with
the independent oracle; then the failure path (every row invalid -> batch failed,
failure notice on SNS -> SQS). Tears down with volumes.

The tests run in order and share one stack. Measurements go to .cache/e2e-metrics.json.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer

from tests.conftest import FIXTURES, REPO
from tests.e2e.conftest import idle_memory, record_metric, wait_healthy
from tests.kpi_check import assert_kpis_equal_oracle
from tests.oracle import batch_from_dir

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

LONG_RUNNING = {"emulator", "spark-master", "spark-worker", "spark-runner", "ingest", "debouncer", "stream-trigger", "controller"}
BUCKET = "cartflow-data"  # Settings() defaults; .env does not rename resources
BATCH_CHUNKS, ORDER_KPIS, CATEGORY_KPIS = "cartflow-batch-chunks", "OrderKPIs", "CategoryKPIs"
FAILURE_TOPIC = "arn:aws:sns:us-east-1:000000000000:cartflow-failure"
_deser = TypeDeserializer()


@pytest.fixture(scope="module")
def stack(compose_v2: str, base_images: None, stack_env: dict[str, str]) -> Iterator[Any]:
    from testcontainers.compose import DockerCompose

    project = stack_env["COMPOSE_PROJECT_NAME"]
    # Build first (separately timed), so "up" below measures start-up only.
    t0 = time.monotonic()
    build = subprocess.run([compose_v2, "compose", "build"], cwd=REPO, capture_output=True, text=True, timeout=3600)
    assert build.returncode == 0, f"docker compose build failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    record_metric("compose_build_seconds", round(time.monotonic() - t0, 1))

    compose = DockerCompose(
        REPO, compose_file_name="docker-compose.yml", wait=False, services=sorted(LONG_RUNNING), docker_command_path=compose_v2
    )
    t_up = time.monotonic()
    try:
        compose.start()  # `up --detach`: returns once depends_on conditions let every service start
        healthy = wait_healthy(compose_v2, project, LONG_RUNNING, timeout=900)
        record_metric("up_to_all_healthy_seconds", round(time.monotonic() - t_up, 1))
        del healthy
        yield {
            "compose": compose,
            "t_up": t_up,
            "project": project,
            "docker": compose_v2,
            "endpoint": f"http://127.0.0.1:{stack_env['EMULATOR_PORT']}",
        }
    except BaseException:
        out, err = compose.get_logs()
        print(out[-20000:], err[-5000:])
        raise
    finally:
        compose.stop(down=True)  # down --volumes


@pytest.fixture(scope="module")
def aws(stack: dict[str, Any]) -> dict[str, Any]:
    kw = {
        "endpoint_url": stack["endpoint"],
        "region_name": "us-east-1",
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
    }
    return {name: boto3.client(name, **kw) for name in ("s3", "dynamodb", "sqs", "sns")}


def chunks(ddb: Any) -> list[dict[str, Any]]:
    """Batch chunk rows (the table also holds the controller's "#lock" row)."""
    return [c for c in scan(ddb, BATCH_CHUNKS) if c.get("group_key") != "#lock" and "status" in c]


def scan(ddb: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in ddb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items += [{k: _deser.deserialize(v) for k, v in i.items()} for i in page["Items"]]
    return items


def wait_for(predicate: Any, timeout: float, what: str, stack: dict[str, Any], interval: float = 2.0) -> Any:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    out, _ = stack["compose"].get_logs("spark-runner", "stream-trigger", "controller")
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n--- logs ---\n{out[-15000:]}")


def test_seeded_fixtures_reach_kpis_equal_to_the_oracle(stack: dict[str, Any], aws: dict[str, Any]) -> None:
    compose = stack["compose"]
    t_seed = time.monotonic()
    # The one-shot seeder container, exactly as `docker compose up` runs it.
    seeded = subprocess.run(
        [stack["docker"], "compose", "run", "--rm", "seeder"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    n_files = len(list((FIXTURES / "valid").rglob("*.csv")))
    assert seeded.stdout.count("uploaded s3://") == n_files, seeded.stdout

    def done_batch() -> Any:
        rows = chunks(aws["dynamodb"])
        assert not [c for c in rows if c["status"] == "failed"], f"a batch failed: {rows}"
        settled = sum(len(c["file_paths"]) for c in rows) == n_files and all(c["status"] == "done" for c in rows)
        return rows if settled else None

    done = wait_for(done_batch, 1200, "the valid batch to be done", stack)
    record_metric("seed_to_kpis_seconds", round(time.monotonic() - t_seed, 1))
    record_metric("up_to_kpis_seconds", round(time.monotonic() - stack["t_up"], 1))
    assert sum(len(c["file_paths"]) for c in done) == n_files

    assert_kpis_equal_oracle(
        scan(aws["dynamodb"], ORDER_KPIS), scan(aws["dynamodb"], CATEGORY_KPIS), [batch_from_dir(FIXTURES / "valid")]
    )

    # Idle footprint of the whole stack after one batch (JVMs warmed up).
    record_metric("idle_memory", idle_memory(stack["docker"], stack["project"]))
    del compose


def container(stack: dict[str, Any], service: str) -> str:
    res = subprocess.run(
        [stack["docker"], "ps", "-aq", "--filter", f"label=com.docker.compose.project={stack['project']}",
         "--filter", f"label=com.docker.compose.service={service}"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    [cid] = res.stdout.split()
    return cid


def test_docker_kill_of_the_worker_and_controller_mid_batch_loses_nothing(stack: dict[str, Any], aws: dict[str, Any]) -> None:
    """`docker kill` (SIGKILL, no restart policy applies) of the spark-runner in the middle of its
    Spark job and of the controller, then `docker start`: the watchdog re-runs the batch, every
    file ends archived exactly once and the KPIs equal the oracle for valid + update."""
    s3, ddb, docker = aws["s3"], aws["dynamodb"], stack["docker"]
    keys = []
    for path in sorted((FIXTURES / "update").rglob("*.csv")):
        key = "raw/" + path.relative_to(FIXTURES / "update").as_posix()
        s3.upload_file(str(path), BUCKET, key)
        keys.append(key)
    uris = {f"s3://{BUCKET}/{k}" for k in keys}

    def running() -> Any:
        return next((c for c in chunks(ddb) if set(c["file_paths"]) == uris and c["status"] == "processing"
                     and "worker_heartbeat_at" in c), None)  # fmt: skip

    chunk = wait_for(running, 900, "the update batch's Spark job to start", stack)
    time.sleep(5)  # inside the job
    t_kill = time.monotonic()
    for service in ("spark-runner", "controller"):
        subprocess.run([docker, "kill", container(stack, service)], check=True, capture_output=True, timeout=60)
    time.sleep(3)
    for service in ("spark-runner", "controller"):
        subprocess.run([docker, "start", container(stack, service)], check=True, capture_output=True, timeout=60)

    def done() -> Any:
        c = next(c for c in chunks(ddb) if c["batch_id"] == chunk["batch_id"])
        assert c["status"] != "failed", c
        return c if c["status"] == "done" else None

    final = wait_for(done, 1200, "the killed batch to finish", stack)
    record_metric("kill_to_done_seconds", round(time.monotonic() - t_kill, 1))
    assert int(final.get("auto_reruns", 0)) >= 1  # it finished through the watchdog's re-run
    events = [e for e in scan(ddb, "cartflow-events") if e["s3_path"] in uris]
    assert sorted(e["s3_path"] for e in events) == sorted(uris)  # each file once, none lost
    archived = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"processed/{final['batch_id']}/").get("Contents", [])}
    assert archived == {f"processed/{final['batch_id']}/{k[4:]}" for k in keys}
    assert_kpis_equal_oracle(
        scan(ddb, ORDER_KPIS), scan(ddb, CATEGORY_KPIS), [batch_from_dir(FIXTURES / "valid"), batch_from_dir(FIXTURES / "update")]
    )


def test_a_batch_over_the_quarantine_threshold_fails_and_sends_a_failure_notice(
    stack: dict[str, Any], aws: dict[str, Any]
) -> None:
    sqs, sns, s3 = aws["sqs"], aws["sns"], aws["s3"]
    url = sqs.create_queue(QueueName="e2e-failure-notices")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=FAILURE_TOPIC, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"})

    # Every row breaks a rule: 100% quarantined is over the default threshold (50%).
    broken = FIXTURES / "broken" / "order_lines" / "order_lines_all_invalid.csv"
    key = "raw/order_lines/" + broken.name
    s3.upload_file(str(broken), BUCKET, key)

    def failed_batch() -> Any:
        for c in chunks(aws["dynamodb"]):
            if any(p.endswith(key) for p in c["file_paths"]):
                assert c["status"] != "done", f"broken file's batch succeeded: {c}"
                return c if c["status"] == "failed" else None
        return None

    chunk = wait_for(failed_batch, 900, "the broken batch to fail", stack)
    assert chunk.get("error"), chunk

    def notice() -> Any:
        msgs = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, MaxNumberOfMessages=10).get("Messages", [])
        return [m for m in msgs if chunk["batch_id"] in m["Body"]]

    [msg, *_] = wait_for(notice, 120, "the failure notice", stack, interval=0)
    print("\nfailure notice:", msg["Body"][:500])
    assert "quarantined 5 of 5 rows" in msg["Body"]
    # The broken file stays in raw/ for a fix-and-retry (it is not archived).
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=key).get("KeyCount", 0) == 1
