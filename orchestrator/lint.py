"""Structural checks of an Amazon States Language definition (JSONPath flavour), stdlib only.

Why this exists: the emulator's ValidateStateMachineDefinition answers OK for any input, and
cfn-lint's ASL schema rule (E3601, run in tests/unit/test_state_machine_lint.py) checks field
shapes but not the graph. ``problems(definition)`` adds what a deploy would otherwise find
late: every Next/Default/Catch target exists in its scope, every state is reachable, exactly
one of Next/End, no unknown fields per state type, Task resources are well-formed ARNs,
``States.ALL`` comes last and alone, ``.$`` fields hold paths or intrinsic functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

_IO = {"Comment", "Type", "InputPath", "OutputPath"}
_NEXT = {"Next", "End"}
_RESULT = {"ResultPath", "ResultSelector", "Parameters"}
_ERRORS = {"Retry", "Catch"}
ALLOWED: dict[str, set[str]] = {
    "Task": _IO
    | _NEXT
    | _RESULT
    | _ERRORS
    | {"Resource", "TimeoutSeconds", "TimeoutSecondsPath", "HeartbeatSeconds", "HeartbeatSecondsPath", "Credentials"},
    "Pass": _IO | _NEXT | {"Result", "ResultPath", "Parameters"},
    "Choice": _IO | {"Choices", "Default"},
    "Wait": _IO | _NEXT | {"Seconds", "Timestamp", "SecondsPath", "TimestampPath"},
    "Parallel": _IO | _NEXT | _RESULT | _ERRORS | {"Branches"},
    "Map": _IO
    | _NEXT
    | _RESULT
    | _ERRORS
    | {
        "ItemsPath",
        "ItemProcessor",
        "Iterator",
        "ItemSelector",
        "MaxConcurrency",
        "MaxConcurrencyPath",
        "ItemReader",
        "ItemBatcher",
        "ResultWriter",
        "ToleratedFailureCount",
        "ToleratedFailurePercentage",
        "ToleratedFailureCountPath",
        "ToleratedFailurePercentagePath",
        "Label",
    },
    "Succeed": _IO,
    "Fail": {"Comment", "Type", "Error", "ErrorPath", "Cause", "CausePath"},
}
_TOP = {"Comment", "StartAt", "States", "TimeoutSeconds", "Version", "QueryLanguage"}
_RESOURCE = re.compile(
    r"^arn:aws[a-z-]*:states:::(aws-sdk:[a-z0-9]+:[a-zA-Z0-9]+|[a-z0-9-]+:[a-zA-Z0-9]+(\.sync(:2)?|\.waitForTaskToken)?)$"
    r"|^arn:aws[a-z-]*:states:[a-z0-9-]+:\d{12}:activity:[A-Za-z0-9_.-]{1,80}$"
    r"|^arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]{1,64}(:[A-Za-z0-9$_-]+)?$"
)


def _targets(state: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(field, target state) of every transition out of a state."""
    if "Next" in state:
        yield "Next", state["Next"]
    if "Default" in state:
        yield "Default", state["Default"]
    for i, rule in enumerate(state.get("Choices", [])):
        yield f"Choices[{i}].Next", rule.get("Next")
    for i, catcher in enumerate(state.get("Catch", [])):
        yield f"Catch[{i}].Next", catcher.get("Next")


def _check_errors(where: str, field: str, entries: Any) -> list[str]:
    out = []
    if not isinstance(entries, list):
        return [f"{where}: {field} must be a list"]
    for i, entry in enumerate(entries):
        errors = entry.get("ErrorEquals")
        if not isinstance(errors, list) or not errors:
            out.append(f"{where}: {field}[{i}].ErrorEquals must be a non-empty list")
            continue
        if "States.ALL" in errors and (len(errors) > 1 or i != len(entries) - 1):
            out.append(f"{where}: {field}[{i}] States.ALL must be alone and last")
        if field == "Catch" and "Next" not in entry:
            out.append(f"{where}: Catch[{i}] has no Next")
    return out


def _check_dollar_fields(where: str, node: Any) -> list[str]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith(".$") and not (isinstance(value, str) and value.startswith(("$", "States."))):
                out.append(f"{where}: {key} must be a path or an intrinsic function, got {value!r}")
            out += _check_dollar_fields(where, value)
    elif isinstance(node, list):
        for value in node:
            out += _check_dollar_fields(where, value)
    return out


def _check_machine(machine: Mapping[str, Any], scope: str, top: bool) -> list[str]:
    out: list[str] = []
    allowed_top = _TOP if top else _TOP | {"ProcessorConfig"}
    out += [f"{scope}: unknown field {k}" for k in sorted(set(machine) - allowed_top)]
    states = machine.get("States")
    if not isinstance(states, dict) or not states:
        return [*out, f"{scope}: States must be a non-empty object"]
    if machine.get("StartAt") not in states:
        out.append(f"{scope}: StartAt {machine.get('StartAt')!r} is not a state")
    for name, state in states.items():
        where = f"{scope}.{name}"
        kind = state.get("Type")
        if kind not in ALLOWED:
            out.append(f"{where}: unknown Type {kind!r}")
            continue
        out += [f"{where}: field {k} is not allowed in a {kind} state" for k in sorted(set(state) - ALLOWED[kind])]
        if kind not in ("Choice", "Succeed", "Fail") and ("Next" in state) == bool(state.get("End")):
            out.append(f"{where}: needs exactly one of Next / End")
        if kind == "Choice" and not state.get("Choices"):
            out.append(f"{where}: Choice without Choices")
        for field, target in _targets(state):
            if target not in states:
                out.append(f"{where}: {field} -> {target!r} is not a state in this scope")
        if kind == "Task" and not (isinstance(state.get("Resource"), str) and _RESOURCE.match(state["Resource"])):
            out.append(f"{where}: Resource {state.get('Resource')!r} is not a Step Functions task ARN")
        for field in ("Retry", "Catch"):
            if field in state:
                out += _check_errors(where, field, state[field])
        out += _check_dollar_fields(where, {k: state[k] for k in ("Parameters", "ResultSelector", "ItemSelector") if k in state})
        for i, branch in enumerate(state.get("Branches", [])):
            out += _check_machine(branch, f"{where}.Branches[{i}]", top=False)
        if "ItemProcessor" in state:
            out += _check_machine(state["ItemProcessor"], f"{where}.ItemProcessor", top=False)
    out += [f"{scope}.{n}: unreachable from StartAt" for n in sorted(set(states) - _reachable(machine))]
    return out


def _reachable(machine: Mapping[str, Any]) -> set[str]:
    states = machine["States"]
    seen: set[str] = set()
    todo: list[Any] = [machine.get("StartAt")]
    while todo:
        name = todo.pop()
        if not isinstance(name, str) or name in seen or name not in states:
            continue
        seen.add(name)
        todo += [t for _, t in _targets(states[name])]
    return seen


def problems(definition: Mapping[str, Any]) -> list[str]:
    """Every structural problem found (empty list: the definition passes)."""
    return _check_machine(definition, "$", top=True)
