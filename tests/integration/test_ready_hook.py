"""The emulator's ready.d hook imports cartflow like any other code and applies the spec.

It runs with the emulator's own Python (MiniStack's virtualenv: botocore and PyYAML, no
pydantic, no boto3), exactly as the compose emulator runs it, against a real emulator.
"""

from __future__ import annotations

import os
import subprocess

import boto3
import pytest

from cartflow.core.config import Settings
from tests.conftest import REPO

HOOK = REPO / "localstack-init" / "ready.d" / "10-cartflow-resources.py"

pytestmark = pytest.mark.integration


def test_hook_applies_the_spec_with_the_emulators_python(base_settings: Settings, emulator: str) -> None:
    python = base_settings.emulator_venv / "bin" / "python"
    # The point of the test: that interpreter lacks cartflow's runtime dependencies.
    probe = subprocess.run([str(python), "-c", "import pydantic"], capture_output=True, text=True)
    assert probe.returncode != 0, "the emulator's Python unexpectedly has pydantic"

    env = {
        "PATH": os.environ.get("PATH", ""),
        "CARTFLOW_INIT_SRC": str(REPO),
        "AWS_ENDPOINT_URL": emulator,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": base_settings.region,
        "CARTFLOW_BUCKET": "hook-applied",
    }
    run = subprocess.run([str(python), str(HOOK)], capture_output=True, text=True, timeout=300, env=env, cwd="/")
    assert run.returncode == 0, f"hook failed:\n{run.stdout}\n{run.stderr}"
    assert "cartflow init:" in run.stdout

    s3 = boto3.client("s3", endpoint_url=emulator, region_name=base_settings.region)
    assert "hook-applied" in {b["Name"] for b in s3.list_buckets()["Buckets"]}
    sfn = boto3.client("stepfunctions", endpoint_url=emulator, region_name=base_settings.region)
    assert sfn.list_state_machines()["stateMachines"], "the hook created no state machine"
