"""Render the cartflow state machine (Amazon States Language) for one target.

STDLIB ONLY: this module also runs inside the emulator container's init hook, which has
neither pydantic nor boto3. It can be imported as ``orchestrator.render`` or run
as a plain script next to its two JSON files::

    python render.py local params.json > definition.json

One template, two targets:

* ``state_machine.asl.json`` holds every state. The two Spark job states (Validate,
  Transform) carry a ``Cartflow.Job`` marker plus the fields both targets share (Retry,
  Catch, Next, Comment, and the ResultPath where the job's result document lands).
* ``job_states.json`` holds the per-target body of a job state: an Activity task
  (``local``) or a Parallel wrapping ``ecs:runTask.sync``, an exit-code check and reading
  the job's result from the job results table (``aws``). The two renderings differ only in
  those two states.
* Each job has a second state for the distributed engine (ValidateOnCluster,
  TransformOnCluster: marker ``"engine": "distributed"``), reached through a routing Choice
  on the batch's ``input_bytes``; on AWS its body is ``aws-eks`` (``eks:runJob.sync``).

Placeholders are ``${name}``. A string that is exactly one placeholder is replaced by the
parameter's value *with its JSON type* (numbers stay numbers, subnet lists stay lists);
a placeholder inside a longer string is replaced by its text.

``state_machine_params(target, values)`` builds the parameters from setting values; every
caller (the emulator applier, the CloudFormation renderer, the CLI, the tests) uses it. A
value only a deployment knows is a ``DeployTime``: it stays in the output as the Fn::Sub
variable CloudFormation fills in. The aws job states pass the Spark job the fields of
cartflow.core.models.BatchInput; that pydantic model is imported only for the aws rendering,
so the local one (what the ready.d hook renders) needs nothing but the stdlib.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

Target = Literal["local", "aws"]
TARGETS: tuple[str, ...] = ("local", "aws")

_HERE = Path(__file__).resolve().parent
TEMPLATE_FILE = _HERE / "state_machine.asl.json"
JOB_STATES_FILE = _HERE / "job_states.json"

JOB_MARKER = "Cartflow.Job"
# The job_states.json body of a job state, by target and the marker's engine: "task" (one
# container: the local Activity worker, a Fargate task) or "distributed" (a cluster: locally
# the same Activity worker, which already runs on the compose cluster; on AWS an EKS job).
JOB_BODIES: dict[str, dict[str, str]] = {
    "local": {"task": "local", "distributed": "local"},
    "aws": {"task": "aws", "distributed": "aws-eks"},
}
# Fields of a job state that are common to both targets; everything else comes from job_states.json.
_COMMON_JOB_FIELDS = ("Comment", "Retry", "Catch", "Next", "End")

# The AWS target retries a failed Fargate job 30 s, 60 s, 120 s apart (3 attempts, backoff 2);
# state_machine_params passes them for the aws target.
AWS_RETRY_DEFAULTS: dict[str, object] = {
    "retry_interval_seconds": 30,
    "retry_max_attempts": 3,
    "retry_backoff_rate": 2.0,
}

_COMMON_REQUIRED = (
    "bucket",
    "batch_chunks_table",
    "success_topic_arn",
    "failure_topic_arn",
    "retry_interval_seconds",
    "retry_max_attempts",
    "retry_backoff_rate",
)
REQUIRED_PARAMS: dict[str, tuple[str, ...]] = {
    "local": (*_COMMON_REQUIRED, "validate_activity_arn", "transform_activity_arn"),
    "aws": (
        *_COMMON_REQUIRED,
        "ecs_cluster",
        "ecs_task_definition",
        "ecs_container_name",
        "subnets",
        "security_groups",
        "job_results_table",  # where a job task puts its result (ReadResult: dynamodb:getItem)
    ),
}
# No batch has more input bytes than this (2**53 - 1: the largest integer every JSON reader keeps).
NEVER_ROUTED = 2**53 - 1
NOT_CONFIGURED = "not-configured"
# Optional parameters and their defaults (the same for both targets).
OPTIONAL_PARAMS: dict[str, object] = {
    # Upper bound for one job attempt; the controller's max_execution_seconds bounds the whole run.
    "job_timeout_seconds": 3600,
    # Local Activity only: the spark-runner heartbeats every ~10 s, so 120 s means "worker is gone".
    # AWS enforces it; MiniStack does not (see ENVIRONMENT.md).
    "job_heartbeat_seconds": 120,
    # AWS only: ENABLED is needed in public subnets without a NAT gateway / VPC endpoints.
    "ecs_assign_public_ip": "DISABLED",
    # The routing Choices send a batch with more input bytes than this to the distributed job
    # states; by default (no engine configured) none is that large.
    "distributed_min_input_bytes": NEVER_ROUTED,
    # AWS only: the distributed job states' EKS cluster and the image its pods run (see
    # cartflow/infra/distributed.py); unreachable while the threshold is NEVER_ROUTED.
    **dict.fromkeys(("eks_cluster", "eks_endpoint", "eks_certificate_authority", "spark_image"), NOT_CONFIGURED),
    "eks_namespace": "cartflow",
    "eks_service_account": "cartflow-spark",
}
KNOWN_PARAMS: frozenset[str] = frozenset(set(REQUIRED_PARAMS["local"]) | set(REQUIRED_PARAMS["aws"]) | set(OPTIONAL_PARAMS))

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")
_SUB_VARIABLE = re.compile(r"\$\{[A-Za-z0-9:.]+\}")

# Setting values state_machine_params reads (Settings field names); params_from_settings
# collects them from a Settings.
SETTING_FIELDS: tuple[str, ...] = (
    "region",
    "account_id",
    "bucket",
    "batch_chunks_table",
    "success_topic",
    "failure_topic",
    "validate_activity",
    "transform_activity",
    "job_retry_interval_seconds",
    "job_retry_max_attempts",
    "job_retry_backoff_rate",
    "job_heartbeat_seconds",
    "ecs_cluster",
    "ecs_task_definition",
    "ecs_container_name",
    "ecs_subnets",
    "ecs_security_groups",
    "job_results_table",
    "distributed_min_input_bytes",
    "eks_cluster",
    "eks_namespace",
    "eks_service_account",
)
_COMMON_VALUES = ("region", "account_id", "bucket", "batch_chunks_table", "success_topic", "failure_topic")
_NEEDED_VALUES: dict[str, tuple[str, ...]] = {
    "local": (
        *_COMMON_VALUES,
        "validate_activity",
        "transform_activity",
        "job_retry_interval_seconds",
        "job_retry_max_attempts",
        "job_retry_backoff_rate",
    ),
    "aws": (
        *_COMMON_VALUES,
        "ecs_cluster",
        "ecs_task_definition",
        "ecs_container_name",
        "ecs_subnets",
        "ecs_security_groups",
        "job_results_table",
    ),
}
# The aws rendering's distributed job states (EKS); values other than Settings fields come
# from the CloudFormation renderer.
_EKS_VALUES = ("eks_cluster", "eks_namespace", "eks_service_account", "eks_endpoint", "eks_certificate_authority", "spark_image")
# Parameters derived from region + account id + a name, which a caller may know better.
ARN_PARAMS: tuple[str, ...] = ("success_topic_arn", "failure_topic_arn", "validate_activity_arn", "transform_activity_arn")

# The aws job states hand the batch to the ECS task on its command line, and ECS caps
# container overrides at 8 KiB: a 50-file batch is ~17 KB with its archive list, ~4 KB without.
JOB_INPUT_EXCLUDED: tuple[str, ...] = ("archive",)


class RenderError(ValueError):
    """The parameters or the template are not what the renderer expects."""


class DeployTime(str):
    """A value only the deployment knows (a template parameter, a resource's Ref or attribute),
    written into the definition as its Fn::Sub variable ``${Name}``: the CloudFormation
    renderer wraps the whole definition in Fn::Sub. The one kind of value allowed braces."""

    __slots__ = ()

    def __new__(cls, variable: str) -> DeployTime:
        if not _SUB_VARIABLE.fullmatch(variable):
            raise RenderError(f"not a Fn::Sub variable: {variable!r}")
        return super().__new__(cls, variable)


# --------------------------------------------------------------------------- parameters


def as_target(value: str) -> Target:
    """A target given as a plain string (a command-line argument), or RenderError for an unknown one."""
    if value == "local":
        return "local"
    if value == "aws":
        return "aws"
    raise RenderError(f"unknown target {value!r}; expected one of {', '.join(TARGETS)}")


def _check_params(target: str, params: Mapping[str, object]) -> dict[str, object]:
    """Return the complete parameter set for ``target`` or raise RenderError naming every problem."""
    as_target(target)
    problems: list[str] = []
    unknown = sorted(set(params) - KNOWN_PARAMS)
    if unknown:
        problems.append(f"unknown parameter(s): {', '.join(unknown)}")
    missing = [name for name in REQUIRED_PARAMS[target] if name not in params]
    if missing:
        problems.append(f"missing parameter(s) for target {target!r}: {', '.join(missing)}")
    # Parameters of the other target are accepted and ignored, so one params dict can
    # come from Settings for both renderings.
    values = {**OPTIONAL_PARAMS, **{k: v for k, v in params.items() if k in KNOWN_PARAMS}}
    for name in REQUIRED_PARAMS[target] + tuple(OPTIONAL_PARAMS):
        if name in values:
            problem = _check_value(name, values[name])
            if problem:
                problems.append(problem)
    if problems:
        raise RenderError("; ".join(problems))
    return values


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_value(name: str, value: object) -> str | None:
    if name == "distributed_min_input_bytes":
        if not _is_int(value) or not 0 <= value <= NEVER_ROUTED:  # type: ignore[operator]
            return f"{name} must be an integer from 0 to {NEVER_ROUTED}, got {value!r}"
    elif name in ("retry_interval_seconds", "job_timeout_seconds", "job_heartbeat_seconds"):
        if not _is_int(value) or value < 1:  # type: ignore[operator]
            return f"{name} must be an integer >= 1, got {value!r}"
    elif name == "retry_max_attempts":
        if not _is_int(value) or value < 0:  # type: ignore[operator]
            return f"{name} must be an integer >= 0, got {value!r}"
    elif name == "retry_backoff_rate":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1.0:
            return f"{name} must be a number >= 1.0, got {value!r}"
    elif name in ("subnets", "security_groups"):
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) and x for x in value):
            return f"{name} must be a list of non-empty strings, got {value!r}"
        if name == "subnets" and not value:
            return "subnets must name at least one subnet (Fargate tasks use awsvpc networking)"
    elif name == "ecs_assign_public_ip":
        if value not in ("ENABLED", "DISABLED"):
            return f"{name} must be ENABLED or DISABLED, got {value!r}"
    elif not isinstance(value, str) or not value:
        return f"{name} must be a non-empty string, got {value!r}"
    elif isinstance(value, DeployTime):
        return None  # its braces are Fn::Sub's, checked when it was made
    elif "'" in value or "{" in value or "}" in value or "\\" in value:
        # Values end up inside intrinsic-function strings too; keep them plain.
        return f"{name} contains a character not allowed in a state machine value: {value!r}"
    return None


def state_machine_params(
    target: Target,
    values: Mapping[str, Any],
    *,
    arns: Mapping[str, str] | None = None,
    assign_public_ip: bool | None = None,
) -> dict[str, object]:
    """The render parameters for ``target``, from setting values (Settings field names, SETTING_FIELDS).

    ``local`` needs only the spec's values (``Settings.spec_values()``, or the ready.d hook's
    ``values_from_env``); ``aws`` also the ``ecs_*`` settings. ``job_heartbeat_seconds`` is
    optional (absent: the renderer's default). ``arns`` replaces ARNs otherwise derived from
    region, account id and name (keys: ARN_PARAMS), e.g. the activity ARNs the emulator
    returned; ``assign_public_ip`` sets the aws tasks' public IP (absent: the default).
    The aws rendering retries with AWS_RETRY_DEFAULTS, the local one with the job_retry_* values.
    """
    as_target(target)
    missing = [name for name in _NEEDED_VALUES[target] if name not in values]
    unknown = sorted(set(arns or {}) - set(ARN_PARAMS))
    if missing or unknown:
        raise RenderError(f"state machine parameters for {target!r}: missing value(s) {missing}, unknown ARN(s) {unknown}")

    def arn(service: str, resource: str) -> str:
        return f"arn:aws:{service}:{values['region']}:{values['account_id']}:{resource}"

    params: dict[str, object] = {
        "bucket": values["bucket"],
        "batch_chunks_table": values["batch_chunks_table"],
        "success_topic_arn": arn("sns", values["success_topic"]),
        "failure_topic_arn": arn("sns", values["failure_topic"]),
    }
    if target == "aws":
        params.update(AWS_RETRY_DEFAULTS)
        params.update(
            ecs_cluster=values["ecs_cluster"],
            ecs_task_definition=values["ecs_task_definition"],
            ecs_container_name=values["ecs_container_name"],
            job_results_table=values["job_results_table"],
            subnets=list(values["ecs_subnets"]),
            security_groups=list(values["ecs_security_groups"]),
        )
        if assign_public_ip is not None:
            params["ecs_assign_public_ip"] = "ENABLED" if assign_public_ip else "DISABLED"
        if values.get("eks_cluster"):
            # The distributed engine exists: route by the spec's threshold. Endpoint, CA and
            # image are deploy-time values only the template passes (else NOT_CONFIGURED).
            params["distributed_min_input_bytes"] = int(values["distributed_min_input_bytes"])
            params.update({k: values[k] for k in _EKS_VALUES if values.get(k) is not None})
    else:
        params.update(
            retry_interval_seconds=int(values["job_retry_interval_seconds"]),
            retry_max_attempts=int(values["job_retry_max_attempts"]),
            retry_backoff_rate=float(values["job_retry_backoff_rate"]),
            validate_activity_arn=arn("states", f"activity:{values['validate_activity']}"),
            transform_activity_arn=arn("states", f"activity:{values['transform_activity']}"),
        )
        if "job_heartbeat_seconds" in values:
            # The controller's watchdog uses the same number where the emulator ignores it.
            params["job_heartbeat_seconds"] = int(values["job_heartbeat_seconds"])
    # ARNs of the other target are ignored, like its parameters in _check_params.
    params.update({k: v for k, v in (arns or {}).items() if k in params})
    return params


def params_from_settings(settings: Any, target: Target) -> dict[str, object]:
    """``state_machine_params`` with the values of a ``cartflow.core.config.Settings`` (duck-typed: no pydantic here)."""
    return state_machine_params(target, {name: getattr(settings, name) for name in SETTING_FIELDS})


def job_input_parameters() -> dict[str, str]:
    """Parameters of the aws JobInput state: every BatchInput field (but JOB_INPUT_EXCLUDED) from the execution input."""
    # Imported here: a pydantic model, needed only by the aws rendering (see the module docstring).
    from cartflow.core.models import BatchInput

    return {f"{name}.$": f"$.{name}" for name in BatchInput.model_fields if name not in JOB_INPUT_EXCLUDED}


# --------------------------------------------------------------------------- substitution


def _substitute(node: Any, values: Mapping[str, object], strict: bool) -> Any:
    """Replace ${name} placeholders in keys and values; unknown names stay if not strict."""
    if isinstance(node, dict):
        return {_substitute_str(k, values, strict, whole=False): _substitute(v, values, strict) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values, strict) for v in node]
    if isinstance(node, str):
        return _substitute_str(node, values, strict, whole=True)
    return node


def _substitute_str(text: str, values: Mapping[str, object], strict: bool, whole: bool) -> Any:
    m = _PLACEHOLDER.fullmatch(text)
    if whole and m and m.group(1) in values:
        value = values[m.group(1)]
        return list(value) if isinstance(value, tuple) else value

    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            if strict:
                raise RenderError(f"template placeholder ${{{name}}} has no value")
            return match.group(0)
        value = values[name]
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise RenderError(f"${{{name}}} is a {type(value).__name__}; it can only replace a whole JSON value")
        return str(value)

    return _PLACEHOLDER.sub(repl, text)


# --------------------------------------------------------------------------- job states


def _render_job_state(
    state_name: str, state: Mapping[str, Any], body: Mapping[str, Any], shared: Mapping[str, object]
) -> dict[str, Any]:
    """Merge a target's job-state body with the template's common fields for this job."""
    job = state[JOB_MARKER]
    if "ResultPath" not in state:
        raise RenderError(f"job state {state_name} needs a ResultPath (where the result document lands)")
    job_values = {
        **shared,
        "job.name": job["name"],
        "job.state": state_name,
        "job.activity_arn": job["activity_arn"],
        "job.result_key_format": job["result_key_format"],
        "job.result_path": state["ResultPath"],
    }
    # The body owns Type/Resource/ResultPath/...; Retry, Catch and Next are never per-target.
    overlap = set(body) & set(_COMMON_JOB_FIELDS)
    if overlap:
        raise RenderError(f"job_states.json must not define common fields: {sorted(overlap)}")
    target_body = _substitute(body, job_values, strict=False)
    common = {k: v for k, v in state.items() if k in _COMMON_JOB_FIELDS}
    # Order for readers of the output: Type, Comment, the target body, then Retry/Catch/Next.
    return {
        "Type": target_body.pop("Type"),
        **({"Comment": common.pop("Comment")} if "Comment" in common else {}),
        **target_body,
        **common,
    }


def _without_distributed(template_states: Mapping[str, Any], states: dict[str, Any]) -> dict[str, Any]:
    """No distributed engine (the threshold is NEVER_ROUTED): drop its job states, and a routing
    Choice left without a route becomes a Pass to its Default (the definition stays small)."""
    gone = {n for n, st in template_states.items() if st.get(JOB_MARKER, {}).get("engine") == "distributed"}
    out: dict[str, Any] = {}
    for name, state in states.items():
        if name in gone:
            continue
        out[name] = state
        if state.get("Type") == "Choice" and any(c.get("Next") in gone for c in state["Choices"]):
            kept = [c for c in state["Choices"] if c.get("Next") not in gone]
            note = {"Comment": "No distributed engine configured: every batch runs on one task."}
            out[name] = {**state, "Choices": kept} if kept else {"Type": "Pass", **note, "Next": state["Default"]}
    return out


def load_template() -> dict[str, Any]:
    return json.loads(TEMPLATE_FILE.read_text(encoding="utf-8"))


def load_job_states() -> dict[str, Any]:
    return json.loads(JOB_STATES_FILE.read_text(encoding="utf-8"))


def build_definition(target: Target, params: Mapping[str, object]) -> dict[str, Any]:
    """The rendered definition as a dict (render_state_machine serialises it)."""
    values = _check_params(target, params)
    template = load_template()
    bodies = {engine: load_job_states()[key] for engine, key in JOB_BODIES[target].items()}
    # Only a body that passes the batch on needs BatchInput (and so pydantic).
    shared = {"job.input": job_input_parameters()} if "${job.input}" in json.dumps(bodies) else {}
    states: dict[str, Any] = {}
    for name, state in template["States"].items():
        engine = state[JOB_MARKER].get("engine", "task") if JOB_MARKER in state else None
        states[name] = state if engine is None else _render_job_state(name, state, bodies[engine], shared)
    if values["distributed_min_input_bytes"] == NEVER_ROUTED:
        states = _without_distributed(template["States"], states)
    definition = {**template, "States": states}
    rendered = _substitute(definition, values, strict=True)
    deploy_time = {x for v in values.values() for x in (v if isinstance(v, (list, tuple)) else [v]) if isinstance(x, DeployTime)}
    leftover = [m.group(0) for m in _PLACEHOLDER.finditer(json.dumps(rendered)) if m.group(0) not in deploy_time]
    if leftover:  # pragma: no cover - _substitute(strict=True) already raises
        raise RenderError(f"unrendered placeholder {leftover[0]}")
    return rendered


def without_comments(node: Any) -> Any:
    """A definition without its states' Comments: they document the template in this
    repository, and CloudFormation caps an inline template body at 51,200 bytes."""
    if isinstance(node, list):
        return [without_comments(x) for x in node]
    if not isinstance(node, dict):
        return node
    is_state = "Type" in node or "StartAt" in node
    return {k: without_comments(v) for k, v in node.items() if not (is_state and k == "Comment")}


def render_state_machine(target: Target, params: Mapping[str, object]) -> str:
    """Render the state machine for ``target`` ("local" | "aws") as an ASL JSON string.

    Required params: bucket, batch_chunks_table, success_topic_arn, failure_topic_arn,
    retry_interval_seconds, retry_max_attempts, retry_backoff_rate, and
    local: validate_activity_arn, transform_activity_arn;
    aws: ecs_cluster, ecs_task_definition, ecs_container_name, subnets, security_groups, job_results_table.
    Optional: see OPTIONAL_PARAMS. ``state_machine_params`` builds them from settings.
    Raises RenderError on unknown, missing or malformed parameters.
    """
    return json.dumps(build_definition(target, params), indent=2)


def main(argv: list[str] | None = None) -> int:
    """``python render.py <local|aws> <params.json>``: print the definition (for init hooks)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: render.py <local|aws> <params.json|->", file=sys.stderr)
        return 2
    target, source = args
    raw = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    try:
        print(render_state_machine(as_target(target), json.loads(raw)))
    except RenderError as exc:
        print(f"render.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
