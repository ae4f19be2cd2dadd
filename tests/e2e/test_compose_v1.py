"""docker-compose.yml must also work with Debian's `docker-compose` 1.29 (Python compose v1):
config parses the same, and a subset of the stack (emulator with its ready.d hook, Spark
master + 2 workers through --scale) comes up healthy and goes down with volumes.
The full pipeline under v2 is test_compose_stack.py; this checks the v1 file-format path.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO, require
from tests.e2e.conftest import COMPOSE_V1, free_port, record_metric, wait_healthy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def test_compose_v1_runs_emulator_and_scaled_spark_cluster(docker_engine: str, base_images: None) -> None:
    require(Path(COMPOSE_V1).exists(), "Debian docker-compose 1.29 not installed (apt-get install docker-compose)")
    project = f"cartflow-e2e-v1-{os.getpid()}"
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": project,
        "EMULATOR_PORT": str(free_port()),
        "SPARK_MASTER_UI_PORT": str(free_port()),
        "CARTFLOW_SPARK_IMAGE": "cartflow-spark:e2e-v1",
    }

    def compose(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return subprocess.run([COMPOSE_V1, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)

    version = compose("version", "--short")
    assert version.stdout.strip().startswith("1."), version.stdout
    assert compose("config", "-q").returncode == 0
    assert compose("-f", "docker-compose.yml", "-f", "docker-compose.localstack.yml", "config", "-q").returncode == 0
    built = compose("build", "spark-master")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    try:
        t0 = time.monotonic()
        up = compose("up", "-d", "--scale", "spark-worker=2", "emulator", "spark-master", "spark-worker")
        assert up.returncode == 0, up.stdout + up.stderr
        wait_healthy(docker_engine, project, {"emulator", "spark-master", "spark-worker"}, timeout=600)
        record_metric("compose_v1_subset_up_to_healthy_seconds", round(time.monotonic() - t0, 1))
        # The resource hook ran inside the emulator: the bucket exists through the published port.
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{env['EMULATOR_PORT']}",
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        s3.head_bucket(Bucket="cartflow-data")
        ui = urllib.request.urlopen(f"http://127.0.0.1:{env['SPARK_MASTER_UI_PORT']}/json/", timeout=5).read()
        deadline = time.monotonic() + 120
        while b'"aliveworkers" : 2' not in ui and b'"aliveworkers":2' not in ui and time.monotonic() < deadline:
            time.sleep(2)
            ui = urllib.request.urlopen(f"http://127.0.0.1:{env['SPARK_MASTER_UI_PORT']}/json/", timeout=5).read()
        assert b"aliveworkers" in ui and (b'"aliveworkers" : 2' in ui or b'"aliveworkers":2' in ui), ui[:500]
    finally:
        down = compose("down", "-v", "--remove-orphans", timeout=300)
        assert down.returncode == 0, down.stdout + down.stderr
