"""Both state machine renderings, and the one the template deploys, pass two offline linters:
cfn-lint's ASL schema rule (E3601) and orchestrator/lint.py's graph checks.

The emulator is no help here: MiniStack 1.5.33's ValidateStateMachineDefinition returns
``{"result": "OK"}`` for any input (ministack/services/stepfunctions.py).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from cartflow.core.config import Settings
from cartflow.infra.cloudformation import build_template
from orchestrator.lint import problems
from orchestrator.render import build_definition, params_from_settings, without_comments
from tests.cfn_resolve import resolve, sample_values

SETTINGS = Settings(ecs_subnets=["subnet-a"], ecs_security_groups=["sg-1"])
JOB_STATES = ("Validate", "Transform")


def definitions() -> dict[str, dict[str, Any]]:
    template = build_template(Settings())
    values = sample_values(template, {"SubnetIds": ["subnet-a", "subnet-b"]})
    deployed = json.loads(resolve(template["Resources"]["StateMachine"]["Properties"]["DefinitionString"], values))
    return {
        "local": build_definition("local", params_from_settings(SETTINGS, "local")),
        "aws": build_definition("aws", params_from_settings(SETTINGS, "aws")),
        "deployed": deployed,
    }


DEFINITIONS = definitions()


def cfn_lint(definition: dict[str, Any]) -> list[str]:
    from cfnlint.api import lint

    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": {"Role": {"Type": "String"}},
        "Resources": {
            "Machine": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {"RoleArn": {"Ref": "Role"}, "Definition": definition},
            }
        },
    }
    return [f"{m.rule.id} {m.message}" for m in lint(json.dumps(template, indent=1), regions=["us-east-1"])]


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_cfn_lint_asl_schema(name: str) -> None:
    assert cfn_lint(DEFINITIONS[name]) == []


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_graph_checks(name: str) -> None:
    assert problems(DEFINITIONS[name]) == []


def test_the_deployed_definition_differs_from_the_local_one_only_in_the_job_states() -> None:
    """tests/unit/test_orchestrator.py proves it for render.py's outputs; this is the one CloudFormation gets."""
    # The deployed one carries no Comments (render.without_comments: the inline template size cap).
    local, deployed = without_comments(copy.deepcopy(DEFINITIONS["local"])), copy.deepcopy(DEFINITIONS["deployed"])
    for definition in (local, deployed):
        for name in JOB_STATES:
            definition["States"].pop(name)
    # Values differ by target (topic ARNs of another account/region, the bucket parameter): compare shapes.
    assert _shape(local) == _shape(deployed)
    assert DEFINITIONS["deployed"]["States"]["Validate"]["Type"] == "Parallel"
    assert DEFINITIONS["local"]["States"]["Validate"]["Type"] == "Task"


def _shape(node: Any) -> Any:
    """The definition with ARNs / bucket / table names blanked (the target-specific values)."""
    if isinstance(node, dict):
        return {k: ("<value>" if k in ("TopicArn", "Bucket", "TableName") else _shape(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_shape(v) for v in node]
    return node


def _broken(mutate: Any) -> dict[str, Any]:
    d = copy.deepcopy(DEFINITIONS["aws"])
    mutate(d)
    return d


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["States"]["MarkDone"].update(Next="Nowhere"), "'Nowhere' is not a state"),
        (lambda d: d["States"]["CheckValidation"].update(Default="Transform"), "ValidationRejected: unreachable"),
        (lambda d: d["States"]["MarkDone"].update(End=True), "exactly one of Next / End"),
        (lambda d: d["States"]["MarkDone"].update(Resource="arn:aws:states:::dynamo"), "not a Step Functions task ARN"),
        (lambda d: d["States"]["MarkDone"].update(Foo=1), "field Foo is not allowed"),
        (lambda d: d["States"]["MarkDone"]["Retry"].reverse(), "States.ALL must be alone and last"),
        (lambda d: d["States"]["MarkDone"]["Parameters"]["Key"]["group_key"].update({"S.$": "group_key"}), "must be a path"),
        (
            lambda d: d["States"]["Validate"]["Branches"][0]["States"].pop("ValidateReadResult"),
            "ValidateReadResult' is not a state",
        ),
        (lambda d: d.update(StartAt="Nope"), "StartAt 'Nope'"),
    ],
)
def test_graph_checks_catch_broken_definitions(mutate: Any, expected: str) -> None:
    found = problems(_broken(mutate))
    assert any(expected in p for p in found), found


def test_cfn_lint_catches_a_schema_error() -> None:
    broken = _broken(lambda d: d["States"]["MarkDone"].update(Type="Taskk"))
    assert any(m.startswith("E3601") for m in cfn_lint(broken))
