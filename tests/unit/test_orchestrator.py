"""orchestrator/render.py: one template, two renderings that differ only in the job states."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from cartflow.core.config import Settings
from cartflow.core.models import BatchInput
from orchestrator import render as render_mod
from orchestrator.render import (
    AWS_RETRY_DEFAULTS,
    REQUIRED_PARAMS,
    RenderError,
    build_definition,
    params_from_settings,
    render_state_machine,
)

JOB_STATES = ("Validate", "Transform")
SETTINGS = Settings(ecs_subnets=["subnet-a", "subnet-b"], ecs_security_groups=["sg-1"])


def local_params() -> dict[str, object]:
    return params_from_settings(SETTINGS, "local")


def aws_params() -> dict[str, object]:
    return params_from_settings(SETTINGS, "aws")


def rendered(target: str) -> dict[str, Any]:
    params = local_params() if target == "local" else aws_params()
    return json.loads(render_state_machine(target, params))  # type: ignore[arg-type]


def _all_states(states: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(scope, state) for every state, including Map/Parallel sub-machines."""
    for state in states.values():
        yield states, state
        for branch in state.get("Branches", []):
            yield from _all_states(branch["States"])
        if "ItemProcessor" in state:
            yield from _all_states(state["ItemProcessor"]["States"])


@pytest.mark.parametrize("target", ["local", "aws"])
def test_renders_valid_json_with_every_transition_resolvable(target: str) -> None:
    definition = rendered(target)
    assert definition["StartAt"] == "CheckCurrent"
    assert "${" not in json.dumps(definition)
    assert "Cartflow.Job" not in json.dumps(definition)
    for scope, state in _all_states(definition["States"]):
        targets = [state.get("Next"), state.get("Default")]
        targets += [c["Next"] for c in state.get("Choices", []) + state.get("Catch", [])]
        for name in filter(None, targets):
            assert name in scope, f"{name} is not a state in its scope"
        assert state["Type"] in ("Task", "Pass", "Choice", "Map", "Parallel", "Fail", "Succeed")
        if state["Type"] not in ("Choice", "Fail", "Succeed"):
            assert ("Next" in state) != bool(state.get("End")), state


def test_state_names_are_unique_across_nested_machines() -> None:
    names: list[str] = []
    for scope, state in _all_states(rendered("aws")["States"]):
        names += [n for n, s in scope.items() if s is state]
    assert len(names) == len(set(names))


def test_the_top_level_flow() -> None:
    states = rendered("local")["States"]
    assert list(states) == [
        "CheckCurrent",
        "StageRawFiles",
        "NotCurrent",
        "RouteValidate",
        "Validate",
        "CheckValidation",
        "RouteTransform",
        "Transform",
        "ArchiveRawFiles",
        "DeleteRawFiles",
        "MarkDone",
        "ReleaseLock",
        "NotifySuccess",
        "ValidationRejected",
        "StageFailed",
        "ValidateFailed",
        "TransformFailed",
        "ArchiveFailed",
        "DeleteRawFailed",
        "MarkDoneFailed",
        "NotifyFailure",
        "MarkFailed",
        "ReleaseLockAfterFailure",
        "BatchFailed",
    ]
    assert states["CheckValidation"]["Choices"] == [
        {"Variable": "$.validation.status", "StringEquals": "passed", "Next": "RouteTransform"}
    ]
    assert states["CheckValidation"]["Default"] == "ValidationRejected"
    assert states["BatchFailed"]["Type"] == "Fail"
    assert states["NotifySuccess"]["End"] is True
    # A duplicate execution of a batch that is not processing ends quietly, before any job.
    assert states["CheckCurrent"]["Next"] == "StageRawFiles"
    # The jobs read staged copies of exactly the uploaded versions; only a vanished version is tolerated.
    assert states["StageRawFiles"]["Next"] == "RouteValidate"
    # No distributed engine locally: the routing Choices are Passes to the one-task job states.
    assert states["RouteValidate"] == {"Type": "Pass", "Comment": states["RouteValidate"]["Comment"], "Next": "Validate"}
    assert states["RouteTransform"]["Next"] == "Transform"
    stage = states["StageRawFiles"]["ItemProcessor"]["States"]["StageUpload"]
    assert stage["Parameters"]["CopySource.$"] == "$.read_source"
    assert {e for c in stage["Catch"] for e in c["ErrorEquals"]} == {"S3.NoSuchKeyException", "S3.NoSuchVersionException"}
    deletes = states["DeleteRawFiles"]["ItemProcessor"]["States"]
    assert deletes["DeleteRawVersion"]["Parameters"]["VersionId.$"] == "$.item.version_id"
    assert states["CheckCurrent"]["Catch"][0] == {
        "ErrorEquals": ["DynamoDB.ConditionalCheckFailedException"],
        "ResultPath": "$.error",
        "Next": "NotCurrent",
    }
    assert states["NotCurrent"]["Type"] == "Succeed"
    # Every failure path goes through the notice, then the status, then the lock, then Fail.
    for name in (
        "ValidationRejected",
        "StageFailed",
        "ValidateFailed",
        "TransformFailed",
        "ArchiveFailed",
        "DeleteRawFailed",
        "MarkDoneFailed",
    ):
        assert states[name]["Next"] == "NotifyFailure"
    assert [states[n]["Next"] for n in ("NotifyFailure", "MarkFailed", "ReleaseLockAfterFailure")] == [
        "MarkFailed",
        "ReleaseLockAfterFailure",
        "BatchFailed",
    ]


def test_renderings_differ_only_in_the_job_states() -> None:
    local, aws = rendered("local"), rendered("aws")
    for definition in (local, aws):
        for name in JOB_STATES:
            definition["States"].pop(name)
    assert local == aws


@pytest.mark.parametrize("target", ["local", "aws"])
def test_job_states_share_retry_catch_and_next(target: str) -> None:
    states = rendered(target)["States"]
    assert states["Validate"]["Next"] == "CheckValidation"
    assert states["Transform"]["Next"] == "ArchiveRawFiles"
    for name in JOB_STATES:
        assert states[name]["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": f"{name}Failed"}]
        assert states[name]["Retry"][0]["ErrorEquals"] == ["States.TaskFailed", "States.Timeout"]


def test_retry_values_per_target() -> None:
    local_retry = rendered("local")["States"]["Validate"]["Retry"][0]
    aws_retry = rendered("aws")["States"]["Transform"]["Retry"][0]
    assert (local_retry["IntervalSeconds"], local_retry["MaxAttempts"], local_retry["BackoffRate"]) == (
        SETTINGS.job_retry_interval_seconds,
        SETTINGS.job_retry_max_attempts,
        SETTINGS.job_retry_backoff_rate,
    )
    assert (aws_retry["IntervalSeconds"], aws_retry["MaxAttempts"], aws_retry["BackoffRate"]) == (30, 3, 2.0)
    assert AWS_RETRY_DEFAULTS == {"retry_interval_seconds": 30, "retry_max_attempts": 3, "retry_backoff_rate": 2.0}
    assert isinstance(local_retry["MaxAttempts"], int)  # typed substitution, not "2"


def test_local_job_state_is_an_activity_task() -> None:
    states = rendered("local")["States"]
    assert states["Validate"]["Resource"] == SETTINGS.activity_arn(SETTINGS.validate_activity)
    assert states["Transform"]["Resource"] == SETTINGS.activity_arn(SETTINGS.transform_activity)
    assert states["Validate"]["ResultPath"] == "$.validation"
    assert states["Transform"]["ResultPath"] == "$.transform"
    assert states["Validate"]["HeartbeatSeconds"] < states["Validate"]["TimeoutSeconds"]


def test_aws_job_state_runs_fargate_checks_the_exit_code_and_reads_the_result() -> None:
    job = rendered("aws")["States"]["Validate"]
    assert job["Type"] == "Parallel"
    # The branch output is the whole new state; $[0] unwraps the one-branch result list.
    assert (job["ResultPath"], job["OutputPath"]) == ("$", "$[0]")
    branch = job["Branches"][0]
    steps = ("RunTask", "ExitCode", "JobFailed", "ReadResult", "HasResult", "NoResult", "ParseResult", "Result")
    run, exit_code, crashed, read, has, missing, parse, place = (branch["States"][f"Validate{s}"] for s in steps)
    assert branch["StartAt"] == "ValidateJobInput"
    job_input = branch["States"]["ValidateJobInput"]
    assert (job_input["ResultPath"], job_input["Next"]) == ("$.validation", "ValidateRunTask")
    # Every BatchInput field the jobs use, and not the (large) archive list.
    assert set(job_input["Parameters"]) == {f"{name}.$" for name in BatchInput.model_fields if name != "archive"}
    assert run["Resource"] == "arn:aws:states:::ecs:runTask.sync"
    p = run["Parameters"]
    assert (p["LaunchType"], p["Cluster"], p["TaskDefinition"]) == ("FARGATE", "cartflow", "cartflow-spark-job")
    assert p["NetworkConfiguration"]["AwsvpcConfiguration"]["Subnets"] == ["subnet-a", "subnet-b"]
    assert p["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"] == ["sg-1"]
    override = p["Overrides"]["ContainerOverrides"][0]
    assert override["Name"] == "spark-job"
    # Appended to the Spark image's ENTRYPOINT (python -m spark.jobs), as the e2e test runs it.
    assert override["Command.$"] == "States.Array('validate', '--batch', States.JsonToString($.validation))"
    # The task description lands at the result path for the exit-code check; every attempt is bounded.
    assert (run["ResultPath"], run["Next"], run["TimeoutSeconds"]) == ("$.validation", "ValidateExitCode", 3600)
    # Exit code 0 in either shape (AWS: the task; MiniStack: DescribeTasks' response) reads the result.
    assert exit_code["Type"] == "Choice" and exit_code["Default"] == "ValidateJobFailed"
    paths = [{r["Variable"] for r in c["And"]} for c in exit_code["Choices"]]
    assert paths == [{"$.validation.Containers[0].ExitCode"}, {"$.validation.tasks[0].containers[0].exitCode"}]
    for choice in exit_code["Choices"]:
        tests = {k: v for r in choice["And"] for k, v in r.items() if k != "Variable"}
        assert tests == {"IsPresent": True, "IsNumeric": True, "NumericEquals": 0}
        assert choice["Next"] == "ValidateReadResult"
    assert (crashed["Type"], crashed["Error"]) == ("Fail", "cartflow.JobFailed")
    assert read["Resource"] == "arn:aws:states:::dynamodb:getItem"
    assert read["Parameters"] == {
        "TableName": "cartflow-job-results",
        "Key": {"batch_id": {"S.$": "$.batch_id"}, "job": {"S": "validate"}},
        "ConsistentRead": True,
    }
    assert (read["ResultPath"], read["Next"]) == ("$.validation", "ValidateHasResult")
    assert has["Choices"] == [{"Variable": "$.validation.Item.document.S", "IsPresent": True, "Next": "ValidateParseResult"}]
    assert has["Default"] == "ValidateNoResult"
    assert (missing["Type"], missing["Error"]) == ("Fail", "cartflow.JobResultMissing")
    assert parse["Parameters"] == {"document.$": "States.StringToJson($.validation.Item.document.S)"}
    assert (place["Type"], place["InputPath"], place["ResultPath"]) == ("Pass", "$.validation.document", "$.validation")
    transform_read = rendered("aws")["States"]["Transform"]["Branches"][0]["States"]["TransformReadResult"]
    assert transform_read["Parameters"]["Key"]["job"] == {"S": "transform"}


def test_a_failed_check_is_retried_like_a_crash() -> None:
    """JobFailed / JobResultMissing reach the job state's common Retry, whose States.TaskFailed
    matches every error name but States.Timeout (AWS and MiniStack alike), then its Catch."""
    states = rendered("aws")["States"]
    for name in ("Validate", "Transform"):
        (retry,) = states[name]["Retry"]
        assert "States.TaskFailed" in retry["ErrorEquals"] and retry["MaxAttempts"] >= 1
        assert states[name]["Catch"][0]["ErrorEquals"] == ["States.ALL"]


def test_the_job_writes_its_result_under_the_key_the_state_machine_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    import cartflow.core.aws
    import spark.jobs.__main__ as jobs

    calls: list[dict[str, Any]] = []

    class _Ddb:
        def put_item(self, **kw: Any) -> None:
            calls.append(kw)

    class _Clients:
        def __init__(self, settings: Any) -> None:
            self.dynamodb = _Ddb()

    monkeypatch.setattr(cartflow.core.aws, "AwsClients", _Clients)
    jobs.publish_result(SETTINGS, "transform", "b-1", '{"batch_id": "b-1"}', now=1000.0)
    read = rendered("aws")["States"]["Transform"]["Branches"][0]["States"]["TransformReadResult"]["Parameters"]
    (call,) = calls
    assert call["TableName"] == read["TableName"]
    assert set(call["Item"]) >= set(read["Key"]) | {"document"}
    assert call["Item"]["job"] == read["Key"]["job"] and call["Item"]["batch_id"] == {"S": "b-1"}
    assert call["Item"]["document"] == {"S": '{"batch_id": "b-1"}'}
    assert int(call["Item"]["expires_at"]["N"]) == 1000 + jobs.RESULT_TTL_SECONDS


@pytest.mark.parametrize("target", ["local", "aws"])
def test_missing_params_are_named(target: str) -> None:
    params = local_params() if target == "local" else aws_params()
    for name in REQUIRED_PARAMS[target]:
        incomplete = {k: v for k, v in params.items() if k != name}
        with pytest.raises(RenderError, match=f"missing parameter.*{name}"):
            render_state_machine(target, incomplete)  # type: ignore[arg-type]


def test_unknown_target_and_params_and_bad_values_are_rejected() -> None:
    with pytest.raises(RenderError, match="unknown target"):
        render_state_machine("gcp", local_params())  # type: ignore[arg-type]
    with pytest.raises(RenderError, match=r"unknown parameter.*bucket_name"):
        render_state_machine("local", {**local_params(), "bucket_name": "x"})
    bad = [
        ("retry_max_attempts", "3"),
        ("retry_max_attempts", -1),
        ("retry_interval_seconds", True),
        ("retry_backoff_rate", 0.5),
        ("bucket", ""),
        ("success_topic_arn", "arn:aws:sns:x:y:it's"),
    ]
    for name, value in bad:
        with pytest.raises(RenderError, match=name):
            render_state_machine("local", {**local_params(), name: value})
    with pytest.raises(RenderError, match="subnets"):
        render_state_machine("aws", {**aws_params(), "subnets": []})
    with pytest.raises(RenderError, match="security_groups"):
        render_state_machine("aws", {**aws_params(), "security_groups": "sg-1"})


def test_params_of_the_other_target_are_ignored() -> None:
    both = {**aws_params(), **local_params()}
    assert build_definition("local", both) == build_definition("local", local_params())


def test_optional_params_override_defaults() -> None:
    definition = build_definition("local", {**local_params(), "job_timeout_seconds": 600, "job_heartbeat_seconds": 30})
    assert (definition["States"]["Validate"]["TimeoutSeconds"], definition["States"]["Validate"]["HeartbeatSeconds"]) == (600, 30)


def test_renderer_is_stdlib_only_and_runs_as_a_script(tmp_path: Any) -> None:
    """The emulator container's init hook runs render.py with a bare python."""
    source = render_mod.__file__
    with open(source, encoding="utf-8") as fh:
        imports = [line for line in fh if line.startswith(("import ", "from "))]
    modules = {line.split()[1].split(".")[0] for line in imports}
    assert modules <= {"__future__", "json", "re", "string", "sys", "collections", "pathlib", "typing"}, modules
    params = tmp_path / "params.json"
    params.write_text(json.dumps(local_params()))
    out = subprocess.run([sys.executable, "-I", source, "local", str(params)], check=True, capture_output=True, text=True).stdout
    assert json.loads(out) == build_definition("local", local_params())
    bad = subprocess.run([sys.executable, "-I", source, "local", "-"], input="{}", capture_output=True, text=True)
    assert bad.returncode == 1 and "missing parameter" in bad.stderr


def test_one_params_builder_for_every_target() -> None:
    """state_machine_params is what params_from_settings, the applier and the template all call."""
    from orchestrator.render import state_machine_params

    values = SETTINGS.spec_values()
    local = state_machine_params("local", values)
    assert local == {k: v for k, v in local_params().items() if k != "job_heartbeat_seconds"}
    emulated = state_machine_params("local", values, arns={"validate_activity_arn": "arn:emu:v"})
    assert emulated["validate_activity_arn"] == "arn:emu:v"
    with pytest.raises(RenderError, match="ecs_cluster"):
        state_machine_params("aws", values)
    with pytest.raises(RenderError, match="unknown ARN"):
        state_machine_params("local", values, arns={"bucket_arn": "x"})
    assert (
        state_machine_params("aws", {**values, **SETTINGS.model_dump()}, assign_public_ip=True)["ecs_assign_public_ip"]
        == "ENABLED"
    )


def test_deploy_time_values_stay_as_fn_sub_variables() -> None:
    from orchestrator.render import DeployTime

    definition = build_definition("aws", {**aws_params(), "bucket": DeployTime("${BucketName}")})
    text = json.dumps(definition)
    assert '"Bucket": "${BucketName}"' in text and SETTINGS.bucket not in text
    with pytest.raises(RenderError, match="bucket"):
        build_definition("aws", {**aws_params(), "bucket": "${BucketName}"})  # only a DeployTime may hold braces
    with pytest.raises(RenderError, match="not a Fn::Sub variable"):
        DeployTime("bucket-${x")
