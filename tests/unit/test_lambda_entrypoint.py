"""services/lambda-entrypoint.sh: which program the services image starts for a given command.

The script itself runs (under /bin/sh, as in the image); `cartflow`, `aws-lambda-rie` and `python`
are stubs that print how they were called. tests/e2e/test_lambda_image.py runs the real ones.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "services" / "lambda-entrypoint.sh"
HANDLER = "services.ingest.handler"


@pytest.fixture
def stub_path(tmp_path: Path) -> str:
    for name in ("cartflow", "aws-lambda-rie", "python"):
        stub = tmp_path / name
        stub.write_text(f'#!/bin/sh\necho {name} "$@"\n')
        stub.chmod(0o755)
    return f"{tmp_path}{os.pathsep}{os.environ.get('PATH', os.defpath)}"


def start(stub_path: str, *args: str, runtime_api: str | None = None) -> str:
    env = {"PATH": stub_path}
    if runtime_api is not None:
        env["AWS_LAMBDA_RUNTIME_API"] = runtime_api
    res = subprocess.run(["/bin/sh", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=10)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@pytest.mark.parametrize(
    "args",
    [
        ["serve", "ingest"],  # compose's runners
        ["seed", "fixtures/valid"],  # the seeder
        ["healthcheck", "ingest", "--max-age", "60"],
        ["--help"],
        ["--version"],
        [],
        # Not dotted Python names, so never taken for a handler:
        ["fixtures/valid.csv"],
        [".hidden"],
        ["trailing."],
        ["a..b"],
        ["services.ingest handler"],
    ],
)
def test_anything_but_a_handler_is_the_cartflow_cli(stub_path: str, args: list[str]) -> None:
    assert start(stub_path, *args) == " ".join(["cartflow", *args])


def test_a_handler_runs_under_the_emulator_off_lambda(stub_path: str) -> None:
    assert start(stub_path, HANDLER) == f"aws-lambda-rie python -m awslambdaric {HANDLER}"
    assert start(stub_path, HANDLER, runtime_api="") == f"aws-lambda-rie python -m awslambdaric {HANDLER}"


def test_a_handler_runs_awslambdaric_directly_on_lambda(stub_path: str) -> None:
    assert start(stub_path, HANDLER, runtime_api="127.0.0.1:9001") == f"python -m awslambdaric {HANDLER}"
