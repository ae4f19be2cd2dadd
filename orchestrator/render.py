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
  (``local``) or a Parallel wrapping ``ecs:runTask.sync`` + reading the result document
  from S3 (``aws``). The two renderings differ only in those two states.

Placeholders are ``${name}``. A string that is exactly one placeholder is replaced by the
parameter's value *with its JSON type* (numbers stay numbers, subnet lists stay lists);
a placeholder inside a longer string is replaced by its text.
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
# Fields of a job state that are common to both targets; everything else comes from job_states.json.
_COMMON_JOB_FIELDS = ("Comment", "Retry", "Catch", "Next", "End")

# The AWS target retries a failed Fargate job 30 s, 60 s, 120 s apart (3 attempts, backoff 2).
# The caller passes these explicitly; they are here so callers and docs share one source.
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
    "local": _COMMON_REQUIRED + ("validate_activity_arn", "transform_activity_arn"),
    "aws": _COMMON_REQUIRED + ("ecs_cluster", "ecs_task_definition", "ecs_container_name", "subnets", "security_groups"),
}
# Optional parameters and their defaults (the same for both targets).
OPTIONAL_PARAMS: dict[str, object] = {
    # Upper bound for one job attempt; the controller's max_execution_seconds bounds the whole run.
    "job_timeout_seconds": 3600,
    # Local Activity only: the spark-runner heartbeats every ~10 s, so 120 s means "worker is gone".
    # AWS enforces it; MiniStack does not (see ENVIRONMENT.md).
    "job_heartbeat_seconds": 120,
    # AWS only: ENABLED is needed in public subnets without a NAT gateway / VPC endpoints.
    "ecs_assign_public_ip": "DISABLED",
}
KNOWN_PARAMS: frozenset[str] = frozenset(set(REQUIRED_PARAMS["local"]) | set(REQUIRED_PARAMS["aws"]) | set(OPTIONAL_PARAMS))

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")


class RenderError(ValueError):
    """The parameters or the template are not what the renderer expects."""


# --------------------------------------------------------------------------- parameters


def _check_params(target: str, params: Mapping[str, object]) -> dict[str, object]:
    """Return the complete parameter set for ``target`` or raise RenderError naming every problem."""
    if target not in TARGETS:
        raise RenderError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
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
    if name in ("retry_interval_seconds", "job_timeout_seconds", "job_heartbeat_seconds"):
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
    elif "'" in value or "{" in value or "}" in value or "\\" in value:
        # Values end up inside intrinsic-function strings too; keep them plain.
        return f"{name} contains a character not allowed in a state machine value: {value!r}"
    return None


def params_from_settings(settings: Any, target: Target) -> dict[str, object]:
    """Build render parameters from a ``cartflow.core.config.Settings`` (duck-typed: no pydantic here).

    The AWS rendering uses AWS_RETRY_DEFAULTS; the local one the settings' job_retry_* values.
    """
    params: dict[str, object] = {
        "bucket": settings.bucket,
        "batch_chunks_table": settings.batch_chunks_table,
        "success_topic_arn": settings.success_topic_arn,
        "failure_topic_arn": settings.failure_topic_arn,
    }
    if target == "aws":
        params.update(AWS_RETRY_DEFAULTS)
        params.update(
            ecs_cluster=settings.ecs_cluster,
            ecs_task_definition=settings.ecs_task_definition,
            ecs_container_name=settings.ecs_container_name,
            subnets=list(settings.ecs_subnets),
            security_groups=list(settings.ecs_security_groups),
        )
    else:
        params.update(
            retry_interval_seconds=settings.job_retry_interval_seconds,
            retry_max_attempts=settings.job_retry_max_attempts,
            retry_backoff_rate=settings.job_retry_backoff_rate,
            validate_activity_arn=settings.activity_arn(settings.validate_activity),
            transform_activity_arn=settings.activity_arn(settings.transform_activity),
            # The controller's watchdog uses the same number where the emulator ignores it.
            job_heartbeat_seconds=settings.job_heartbeat_seconds,
        )
    return params


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


def _render_job_state(state_name: str, state: Mapping[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a target's job-state body with the template's common fields for this job."""
    job = state[JOB_MARKER]
    if "ResultPath" not in state:
        raise RenderError(f"job state {state_name} needs a ResultPath (where the result document lands)")
    job_values = {
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


def load_template() -> dict[str, Any]:
    return json.loads(TEMPLATE_FILE.read_text(encoding="utf-8"))


def load_job_states() -> dict[str, Any]:
    return json.loads(JOB_STATES_FILE.read_text(encoding="utf-8"))


def build_definition(target: Target, params: Mapping[str, object]) -> dict[str, Any]:
    """The rendered definition as a dict (render_state_machine serialises it)."""
    values = _check_params(target, params)
    template = load_template()
    body = load_job_states()[target]
    states: dict[str, Any] = {}
    for name, state in template["States"].items():
        states[name] = _render_job_state(name, state, body) if JOB_MARKER in state else state
    definition = {**template, "States": states}
    rendered = _substitute(definition, values, strict=True)
    leftover = _PLACEHOLDER.search(json.dumps(rendered))
    if leftover:  # pragma: no cover - _substitute(strict=True) already raises
        raise RenderError(f"unrendered placeholder {leftover.group(0)}")
    return rendered


def render_state_machine(target: Target, params: Mapping[str, object]) -> str:
    """Render the state machine for ``target`` ("local" | "aws") as an ASL JSON string.

    Required params: bucket, batch_chunks_table, success_topic_arn, failure_topic_arn,
    retry_interval_seconds, retry_max_attempts, retry_backoff_rate, and
    local: validate_activity_arn, transform_activity_arn;
    aws: ecs_cluster, ecs_task_definition, ecs_container_name, subnets, security_groups.
    Optional: see OPTIONAL_PARAMS. AWS retry values are conventionally AWS_RETRY_DEFAULTS.
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
        print(render_state_machine(target, json.loads(raw)))  # type: ignore[arg-type]
    except RenderError as exc:
        print(f"render.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
