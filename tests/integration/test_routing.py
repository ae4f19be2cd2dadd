"""The routing Choices by input bytes, executed by MiniStack's Step Functions.

The RouteValidate state exactly as render.py renders it (with a threshold, as for a stack with
an EKS cluster), its two targets replaced by Pass states that record which one ran. The rest of
the flow is tests/integration/test_state_machine.py's; the EKS job itself cannot run here.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import boto3
import pytest

from cartflow.core.config import Settings
from orchestrator.render import build_definition, params_from_settings

pytestmark = pytest.mark.integration

THRESHOLD = 400 << 20


def _routing_machine() -> dict[str, Any]:
    params = {**params_from_settings(Settings(eks_cluster="analytics"), "local"), "distributed_min_input_bytes": THRESHOLD}
    route = build_definition("local", params)["States"]["RouteValidate"]
    (rule,) = route["Choices"]
    return {
        "StartAt": "RouteValidate",
        "States": {
            "RouteValidate": route,
            rule["Next"]: {"Type": "Pass", "Result": "cluster", "ResultPath": "$.engine", "End": True},
            route["Default"]: {"Type": "Pass", "Result": "task", "ResultPath": "$.engine", "End": True},
        },
    }


@pytest.fixture(scope="module")
def sfn(emulator: str) -> Any:
    return boto3.client("stepfunctions", endpoint_url=emulator, region_name="us-east-1")


def _engine(sfn: Any, machine: str, execution_input: dict[str, Any]) -> str:
    arn = sfn.start_execution(stateMachineArn=machine, name=uuid.uuid4().hex, input=json.dumps(execution_input))["executionArn"]
    deadline = time.monotonic() + 30
    while (desc := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "execution still running after 30 s"
        time.sleep(0.2)
    assert desc["status"] == "SUCCEEDED", desc
    return str(json.loads(desc["output"])["engine"])


def test_batches_above_the_threshold_take_the_cluster_route(sfn: Any) -> None:
    machine = sfn.create_state_machine(
        name=f"routing-{uuid.uuid4().hex[:8]}",
        definition=json.dumps(_routing_machine()),
        roleArn="arn:aws:iam::000000000000:role/cartflow-sfn",
    )["stateMachineArn"]
    assert _engine(sfn, machine, {"batch_id": "b-big", "input_bytes": THRESHOLD + 1}) == "cluster"
    assert _engine(sfn, machine, {"batch_id": "b-edge", "input_bytes": THRESHOLD}) == "task"
    assert _engine(sfn, machine, {"batch_id": "b-small", "input_bytes": 1024}) == "task"
    # An execution started before input_bytes existed stays on the task route instead of failing.
    assert _engine(sfn, machine, {"batch_id": "b-old"}) == "task"
