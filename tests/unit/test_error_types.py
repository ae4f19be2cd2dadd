"""One exception hierarchy (CartflowError, stdlib only) and one AWS error-code lookup."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from cartflow.core.errors import error_code
from cartflow.core.exceptions import CartflowError, InfraError

REPO = Path(__file__).resolve().parents[2]


def _classes() -> list[tuple[type[BaseException], type[BaseException]]]:
    """(project exception, the builtin base its callers catch it by).

    Not orchestrator.render.RenderError: render.py runs as a bare script and imports only
    the stdlib (tests/unit/test_orchestrator.py), so it cannot import the base class."""
    from cartflow.core.models import InvalidRawKey
    from cartflow.infra.images import ImageError
    from cartflow.infra.ship import DeployError
    from cartflow.local.checkpoints import CheckpointError
    from cartflow.local.emulator import EmulatorError
    from cartflow.local.stream_source import _StreamGone
    from cartflow.ops.actions import RetryRefused
    from spark.fetch_jars import FetchError
    from spark.jobs.contracts import ContractError

    return [
        (InfraError, RuntimeError),
        (InvalidRawKey, ValueError),
        (ContractError, ValueError),
        (EmulatorError, RuntimeError),
        (CheckpointError, RuntimeError),
        (ImageError, RuntimeError),
        (DeployError, RuntimeError),
        (FetchError, RuntimeError),
        (RetryRefused, Exception),
        (_StreamGone, Exception),
    ]


@pytest.mark.parametrize("cls, builtin", _classes(), ids=lambda c: c.__name__)
def test_every_project_exception_is_a_cartflow_error_and_keeps_its_builtin_base(
    cls: type[BaseException], builtin: type[BaseException]
) -> None:
    assert issubclass(cls, CartflowError) and issubclass(cls, builtin)


def test_the_hierarchy_and_the_retry_helper_import_with_the_stdlib_alone() -> None:
    # -S: no site-packages, so neither pydantic nor botocore nor an installed cartflow.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import cartflow.core.exceptions, cartflow.core.retry;"
        "assert not {'pydantic', 'botocore', 'boto3'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-S", "-c", code, str(REPO)], check=True)


def test_error_code_reads_the_aws_code() -> None:
    exc = ClientError({"Error": {"Code": "NoSuchKey", "Message": "gone"}}, "GetObject")
    assert error_code(exc) == "NoSuchKey"
    assert error_code(ClientError({}, "GetObject")) == ""
    assert error_code(ValueError("not AWS")) == ""


def test_error_code_reads_any_error_that_carries_a_response() -> None:
    class Stub(Exception):
        def __init__(self) -> None:
            super().__init__("stub")
            self.response = {"Error": {"Code": "TaskTimedOut"}}

    assert error_code(Stub()) == "TaskTimedOut"
