"""The Spark image runs a job the way ECS Fargate would: as-is, no master configured
(local[*]), the batch passed as arguments, talking to AWS (here: a MiniStack process)."""

from __future__ import annotations

import json

import pytest

from cartflow.core.models import BatchInput, RawFile
from cartflow.infra import images
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


def run_job(image: str, endpoint: str, job: str, batch: BatchInput) -> dict:  # type: ignore[type-arg]
    import docker

    client = docker.from_env()
    container = client.containers.run(
        image,
        [job, "--batch", batch.model_dump_json()],
        # The task's environment on ECS: endpoint only because this "AWS" is an emulator.
        environment={
            "CARTFLOW_AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
        network_mode="host",  # the emulator listens on the host's 127.0.0.1
        detach=True,
    )
    try:
        status = container.wait(timeout=900)
        logs = container.logs(stdout=True, stderr=False).decode()
        assert status["StatusCode"] == 0, container.logs().decode()[-5000:]
    finally:
        container.remove(force=True)
    return json.loads(logs.strip().splitlines()[-1])  # the result document is the last line


def test_spark_image_validates_and_transforms_a_batch_in_local_mode(spark_image: str, deps) -> None:  # type: ignore[no-untyped-def]
    keys = upload_dir(deps, FIXTURES / "valid")
    files = [RawFile.parse(deps.settings.bucket, k) for k in keys]
    batch = BatchInput.from_files(
        batch_id="b0000000000001-fargate-000",
        group_key="fargate",
        bucket=deps.settings.bucket,
        processing_date="2025-07-09",
        files=files,
    )

    validation = run_job(spark_image, deps.settings.aws_endpoint_url, "validate", batch)
    assert validation["status"] == "passed" and validation["batch_id"] == batch.batch_id
    transform = run_job(spark_image, deps.settings.aws_endpoint_url, "transform", batch)
    assert transform["order_kpi_rows"] > 0

    assert_kpis_equal_oracle(order_kpis(deps), category_kpis(deps), [batch_from_dir(FIXTURES / "valid")])
