"""The resource spec: `cartflow resources apply|iam` and `cartflow render-state-machine`."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from cartflow.cli.context import console, deps
from cartflow.core.config import get_settings

resources_app = typer.Typer(help="The resource spec", no_args_is_help=True)


@resources_app.command("apply")
def resources_apply() -> None:
    """Create/update every resource in the spec (idempotent)."""
    from cartflow.infra import apply_resources

    d = deps()
    for name, ref in apply_resources(d.settings, d.clients).items():
        console.print(f"{name} -> {ref}")


@resources_app.command("iam")
def resources_iam(principal: Annotated[list[str] | None, typer.Argument(help="e.g. ingest spark-job")] = None) -> None:
    """Print the least-privilege IAM policy of each principal, derived from the resource spec."""
    from cartflow.infra.iam import policies

    docs = policies(get_settings().spec_values())
    sys.stdout.write(json.dumps({k: v for k, v in docs.items() if not principal or k in principal}, indent=2) + "\n")


def render_state_machine(target: Annotated[str, typer.Option(help="local | aws")] = "local") -> None:
    """Print the state machine definition for a target (activity ARNs derived from settings)."""
    from orchestrator.render import as_target, params_from_settings
    from orchestrator.render import render_state_machine as render

    settings = get_settings()
    checked = as_target(target)  # an unknown one: the renderer's RenderError
    sys.stdout.write(render(checked, params_from_settings(settings, checked)) + "\n")
