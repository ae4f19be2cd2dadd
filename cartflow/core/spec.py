"""The resource spec (spec.yaml): one description of every AWS resource, for every target.

Read by the settings (its defaults), the emulator applier (cartflow.infra.apply) and the
CloudFormation renderer (cartflow.infra.cloudformation). Stdlib + PyYAML only: it also runs
inside the emulator's ready.d hook, whose Python has neither boto3 nor pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

SPEC_PATH = Path(__file__).with_name("spec.yaml")


def load_spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    with path.open() as fh:
        spec: dict[str, Any] = yaml.safe_load(fh)
    return spec


def defaults(spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return dict((spec or load_spec())["defaults"])


def values_from_env(environ: Mapping[str, str], spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults overridden by CARTFLOW_<NAME>; for the ready.d hook (cartflow itself uses Settings)."""
    values = defaults(spec)
    for name, default in list(values.items()):
        raw = environ.get(f"CARTFLOW_{name.upper()}")
        if raw is not None:
            values[name] = type(default)(raw) if not isinstance(default, str) else raw
    return values


def render(node: Any, values: Mapping[str, Any]) -> Any:
    """Substitute {name} placeholders in every string of the spec."""
    if isinstance(node, str):
        return node.format_map(values)
    if isinstance(node, list):
        return [render(n, values) for n in node]
    if isinstance(node, dict):
        return {k: render(v, values) for k, v in node.items()}
    return node


def arn(values: Mapping[str, Any], service: str, resource: str) -> str:
    return f"arn:aws:{service}:{values['region']}:{values['account_id']}:{resource}"
