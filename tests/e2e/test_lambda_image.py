"""The services image invoked the way AWS base images are: `docker run -p PORT:8080 IMAGE [handler]`,
then an HTTP POST to the Runtime Interface Emulator's invocation endpoint. Inside: the image's
entry script, the RIE and awslambdaric, the same programs Lambda starts (minus the RIE).

Nothing here needs AWS: the functions are given events that touch no resource, or settings that
fail before any call, and the answers are what Lambda would report.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cartflow.infra import images
from cartflow.local.emulator import free_port

pytestmark = pytest.mark.e2e
TAG = "lambda-e2e"
INVOCATIONS = "/2015-03-31/functions/function/invocations"
# A setting outside its bounds (max_files_per_chunk <= 99): Settings rejects it when first read.
BAD_SETTING = {"CARTFLOW_MAX_FILES_PER_CHUNK": "500"}
# What S3 sends through SQS when a notification is configured: ingest records nothing for it.
S3_TEST_EVENT = {
    "Records": [
        {
            "messageId": "m-1",
            "receiptHandle": "r-1",
            "body": json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "cartflow-data"}),
            "attributes": {},
            "messageAttributes": {},
            "md5OfBody": "",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:cartflow-ingest",
            "awsRegion": "us-east-1",
        }
    ]
}


@pytest.fixture(scope="module")
def services_image(docker_engine: str, base_images: None) -> str:
    [built] = images.build_images(only=["services"], tags=[TAG])
    return f"{built.repository}:{TAG}"


@dataclass(frozen=True)
class Function:
    docker: str
    container: str
    url: str

    def logs(self) -> str:
        res = subprocess.run([self.docker, "logs", self.container], capture_output=True, text=True, timeout=30)
        return (res.stdout + res.stderr)[-4000:]

    def invoke(self, event: dict[str, Any], timeout: float = 40) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of one invocation; retried only until the emulator listens."""
        deadline = time.monotonic() + timeout
        while True:
            request = urllib.request.Request(self.url, data=json.dumps(event).encode(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=timeout) as resp:
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as err:
                return err.code, json.loads(err.read())
            except (urllib.error.URLError, ConnectionError) as err:  # not listening yet (docker-proxy resets)
                if time.monotonic() > deadline:
                    raise AssertionError(f"no answer from {self.url}: {err}\n{self.logs()}") from err
                time.sleep(0.2)


@contextmanager
def run_function(
    docker: str, image: str, *command: str, env: dict[str, str] | None = None, volume: Path | None = None
) -> Iterator[Function]:
    """`docker run -p <free port>:8080 IMAGE [command]`, removed afterwards."""
    port = free_port()
    args = [docker, "run", "-d", "-p", f"127.0.0.1:{port}:8080"]
    for name, value in (env or {}).items():
        args += ["-e", f"{name}={value}"]
    if volume is not None:  # extra handler modules, importable by name
        args += ["-v", f"{volume}:/opt/handlers:ro", "-e", "PYTHONPATH=/opt/handlers"]
    res = subprocess.run([*args, image, *command], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    function = Function(docker, res.stdout.strip(), f"http://127.0.0.1:{port}{INVOCATIONS}")
    try:
        yield function
    finally:
        subprocess.run([docker, "rm", "-f", function.container], capture_output=True, timeout=60)


def test_default_command_is_a_function_invocable_like_an_aws_image(docker_engine: str, services_image: str) -> None:
    with run_function(docker_engine, services_image) as ingest:  # no command: the image's CMD, ingest
        status, body = ingest.invoke(S3_TEST_EVENT)
        assert (status, body) == (200, {"batchItemFailures": []}), ingest.logs()
        uid = subprocess.run([docker_engine, "exec", ingest.container, "id", "-u"], capture_output=True, text=True, timeout=30)
        assert uid.stdout.strip() == "10001"  # the emulator and the function run as the image's user
        assert "exec 'python'" in ingest.logs() and "handler=services.ingest.handler" in ingest.logs()


def test_any_other_command_is_the_cartflow_cli(docker_engine: str, services_image: str) -> None:
    # What compose runs (`command: ["serve", "ingest"]`, no entrypoint override).
    res = subprocess.run(
        [docker_engine, "run", "--rm", services_image, "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert "Usage: cartflow serve" in res.stdout


def test_a_handler_error_is_reported_with_its_type_and_message(docker_engine: str, services_image: str) -> None:
    with run_function(docker_engine, services_image, "services.stream_trigger.handler", env=BAD_SETTING) as trigger:
        status, body = trigger.invoke({"Records": []})
    assert status == 200  # the RIE answers a function error with 200 and the error document
    assert body["errorType"] == "ValidationError"
    assert "max_files_per_chunk" in body["errorMessage"] and "less than or equal to 99" in body["errorMessage"]


def test_an_import_error_at_init_shows_the_missing_module(docker_engine: str, services_image: str) -> None:
    # The image has no pyspark: a handler from the Spark side cannot be imported here.
    with run_function(docker_engine, services_image, "spark.jobs.session.build_spark") as broken:
        status, body = broken.invoke({})
    assert status == 502
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert body["errorMessage"] == "Unable to import module 'spark.jobs.session': No module named 'pyspark'"


def test_an_exception_at_init_shows_its_real_type_and_message(docker_engine: str, services_image: str, tmp_path: Path) -> None:
    # A handler module that reads its settings at import (cold start), given a bad one.
    handlers = tmp_path / "handlers"
    handlers.mkdir()
    (handlers / "cold_start.py").write_text(
        "from cartflow.core.config import get_settings\n\n"
        "SETTINGS = get_settings()\n\n\n"
        "def handler(event, context):\n"
        "    return {'bucket': SETTINGS.bucket}\n"
    )
    # The container's user (uid 10001) reads the mounted folder.
    handlers.chmod(0o755)
    (handlers / "cold_start.py").chmod(0o644)
    with run_function(docker_engine, services_image, "cold_start.handler", env=BAD_SETTING, volume=handlers) as broken:
        status, body = broken.invoke({})
        logs = broken.logs()
    assert status == 502, body
    assert body["errorType"] == "ValidationError"
    assert "max_files_per_chunk" in body["errorMessage"] and "less than or equal to 99" in body["errorMessage"]
    assert any("cold_start.py" in frame for frame in body["stackTrace"])
    assert "INIT RTDONE(status: error)" in logs  # reported by the runtime at init, not by an invocation
