"""The Spark image runs a job the way ECS Fargate would: as-is, no master configured
(local[*]), the batch passed as arguments, talking to AWS (here: a MiniStack process); and
the way the distributed engine does: the spark-submit launcher in client mode against a
cluster master (EKS: k8s://; here a standalone master and worker of the same image)."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from cartflow.core.models import BatchInput, RawFile
from cartflow.infra import images
from cartflow.local.emulator import free_port
from cartflow.ops.views import category_kpis, order_kpis, upload_dir
from tests.conftest import FIXTURES
from tests.kpi_check import assert_kpis_equal_oracle
from tests.oracle import batch_from_dir

pytestmark = pytest.mark.e2e
TAG = "fargate-e2e"


@pytest.fixture(scope="module")
def spark_image(docker_engine: str, base_images: None) -> str:
    [built] = images.build_images(only=["spark"], tags=[TAG])
    return f"{built.repository}:{TAG}"


def run_job(image: str, endpoint: str, job: str, batch: BatchInput, *, args: tuple[str, ...] = (), **run: Any) -> dict:  # type: ignore[type-arg]
    """Run one job container to its end; its result document (the last stdout line).

    ``args`` go between the job and its batch; ``run``: more docker run options (the launcher
    test's entrypoint and cluster settings)."""
    import docker

    client = docker.from_env()
    container = client.containers.run(
        image,
        [job, *args, "--batch", batch.model_dump_json()],
        # The task's environment on ECS: endpoint only because this "AWS" is an emulator.
        environment={
            "CARTFLOW_AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            **run.pop("environment", {}),
        },
        network_mode="host",  # the emulator listens on the host's 127.0.0.1
        detach=True,
        **run,
    )
    try:
        status = container.wait(timeout=900)
        logs = container.logs(stdout=True, stderr=False).decode()
        assert status["StatusCode"] == 0, container.logs().decode()[-5000:]
    finally:
        container.remove(force=True)
    last = logs.strip().splitlines()[-1]  # the result document is the last line
    assert last.startswith("{"), f"last stdout line is not the result: {last!r}\n{logs[-3000:]}"
    return json.loads(last)  # type: ignore[no-any-return]


def test_spark_image_validates_and_transforms_a_batch_in_local_mode(spark_image: str, deps) -> None:  # type: ignore[no-untyped-def]
    keys = upload_dir(deps, FIXTURES / "valid")
    files = [RawFile.parse(deps.settings.bucket, k) for k in keys]
    batch = BatchInput.from_files(
        batch_id="b0000000000001-fargate-000",
        group_key="fargate",
        bucket=deps.settings.bucket,
        processing_date="2025-07-09",
        files=files,
        staged=False,  # the job reads raw/ itself: no state machine staged copies for it
    )

    validation = run_job(spark_image, deps.settings.aws_endpoint_url, "validate", batch)
    assert validation["status"] == "passed" and validation["batch_id"] == batch.batch_id
    transform = run_job(spark_image, deps.settings.aws_endpoint_url, "transform", batch)
    assert transform["order_kpi_rows"] > 0

    assert_kpis_equal_oracle(order_kpis(deps), category_kpis(deps), [batch_from_dir(FIXTURES / "valid")])


@pytest.fixture(scope="module")
def spark_cluster(spark_image: str) -> Iterator[tuple[str, int]]:
    """A standalone master and one 2-core worker of the same image (host network, free ports):
    the cluster master the launcher submits to, as it does to k8s:// on EKS."""
    import docker

    client = docker.from_env()
    port, ui, worker_ui = free_port(), free_port(), free_port()
    started = []
    try:
        started.append(client.containers.run(
            spark_image, ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(ui)],
            entrypoint=["spark-class"], network_mode="host", detach=True,
        ))  # fmt: skip
        started.append(client.containers.run(
            spark_image, ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--webui-port", str(worker_ui), f"spark://127.0.0.1:{port}"],
            entrypoint=["spark-class"], environment={"SPARK_WORKER_CORES": "2", "SPARK_WORKER_MEMORY": "2g"}, network_mode="host", detach=True,
        ))  # fmt: skip
        deadline = time.monotonic() + 120
        while _master_state(ui).get("aliveworkers", 0) < 1:
            assert time.monotonic() < deadline, "no worker registered with the master in 120 s"
            time.sleep(1)
        yield f"spark://127.0.0.1:{port}", ui
    finally:
        for container in started:
            container.remove(force=True)


def _master_state(ui_port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as resp:
            return json.load(resp)  # type: ignore[no-any-return]
    except OSError:
        return {}


def test_spark_image_runs_the_launcher_on_a_cluster_with_the_same_results(  # type: ignore[no-untyped-def]
    spark_image: str, spark_cluster: tuple[str, int], deps
) -> None:
    master, ui = spark_cluster
    import docker

    # EKS executor pods run the image's executor entry (spark/k8s/executor.sh): present, executable.
    with pytest.raises(docker.errors.ContainerError) as refused:
        docker.from_env().containers.run(spark_image, [], entrypoint=["/opt/cartflow/k8s/executor.sh"], remove=True)
    assert refused.value.exit_status == 2 and b"usage" in (refused.value.stderr or b"")
    keys = upload_dir(deps, FIXTURES / "valid")
    files = [RawFile.parse(deps.settings.bucket, k) for k in keys]
    batch = BatchInput.from_files(
        batch_id="b0000000000002-cluster-000", group_key="cluster", bucket=deps.settings.bucket,
        processing_date="2025-07-09", files=files,
        # The same fixtures the local-mode test ran: a re-run of that batch, not copies of its files.
        replaces=["b0000000000001-fargate-000"],
    ).model_copy(update={"staged": False})  # read raw/ directly: no state machine staged copies here  # fmt: skip
    # The KPI tables start empty, so what the oracle check sees is this run's output.
    for table in (deps.settings.order_kpis_table, deps.settings.category_kpis_table):
        key = [k["AttributeName"] for k in deps.clients.dynamodb.describe_table(TableName=table)["Table"]["KeySchema"]]
        for item in deps.clients.dynamodb.scan(TableName=table)["Items"]:
            deps.clients.dynamodb.delete_item(TableName=table, Key={k: item[k] for k in key})
    assert order_kpis(deps) == []

    # The EKS job's container: the launcher, the cluster master (the ConfigMap's CARTFLOW_SPARK_MASTER
    # there) and the driver's address as --conf (the pod IP there; host network here).
    launcher: dict[str, Any] = {
        "entrypoint": ["python", "-m", "spark.jobs.submit"],
        "args": ("--conf", "spark.driver.host=127.0.0.1"),
        "environment": {"CARTFLOW_SPARK_MASTER": master, "CARTFLOW_SPARK_DRIVER_MEMORY": "1g"},
    }
    endpoint = deps.settings.aws_endpoint_url
    started = time.monotonic()
    validation = run_job(spark_image, endpoint, "validate", batch, **launcher)
    transform = run_job(spark_image, endpoint, "transform", batch, **launcher)
    print(f"\n[timing] validate + transform through spark-submit on the cluster: {time.monotonic() - started:.1f}s")

    assert validation["status"] == "passed" and validation["batch_id"] == batch.batch_id
    assert transform["order_kpi_rows"] > 0
    # The same result document as on Fargate: the last stdout line is what the job wrote to S3.
    document = deps.clients.s3.get_object(Bucket=deps.settings.bucket, Key=f"validation_output/{batch.batch_id}.json")
    assert json.loads(document["Body"].read()) == validation
    # Both jobs ran as applications of the cluster (executors on its worker), not in local mode.
    apps = {a["name"]: a for a in _master_state(ui).get("completedapps", [])}
    assert {f"cartflow-validate-{batch.batch_id}", f"cartflow-transform-{batch.batch_id}"} <= set(apps), apps
    assert_kpis_equal_oracle(order_kpis(deps), category_kpis(deps), [batch_from_dir(FIXTURES / "valid")])
