"""The resource spec: `cartflow resources apply|iam` and `cartflow render-state-machine`."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from cartflow.cli.choices import Principal, Target
from cartflow.cli.context import YesOpt, console, deps, require_local
from cartflow.core.config import get_settings

resources_app = typer.Typer(help="The resource spec", no_args_is_help=True)


@resources_app.command("apply")
def resources_apply(yes: YesOpt = False) -> None:
    """Create/update every resource in the spec (idempotent; real AWS only with --yes)."""
    from cartflow.infra import apply_resources

    require_local(get_settings(), yes, "resources apply")
    d = deps()
    for name, ref in apply_resources(d.settings, d.clients).items():
        console.print(f"{name} -> {ref}")


@resources_app.command("iam")
def resources_iam(principal: Annotated[list[Principal] | None, typer.Argument(help="default: every principal")] = None) -> None:
    """Print the least-privilege IAM policy of each principal, derived from the resource spec."""
    from cartflow.infra.iam import policies

    docs = policies(get_settings().spec_values())
    wanted = {p.value for p in principal or []}
    sys.stdout.write(json.dumps({k: v for k, v in docs.items() if not wanted or k in wanted}, indent=2) + "\n")


def render_state_machine(
    target: Annotated[Target, typer.Option(help="local: Activity tasks; aws: ecs:runTask.sync")] = Target.LOCAL,
    subnet: Annotated[
        list[str] | None, typer.Option(help="aws: subnet of the Spark tasks (repeatable); default CARTFLOW_ECS_SUBNETS")
    ] = None,
    security_group: Annotated[
        list[str] | None,
        typer.Option(help="aws: security group of the Spark tasks (repeatable); default CARTFLOW_ECS_SECURITY_GROUPS"),
    ] = None,
) -> None:
    """Print the state machine definition for a target (activity ARNs derived from settings)."""
    from orchestrator.render import as_target, params_from_settings
    from orchestrator.render import render_state_machine as render

    settings = get_settings()
    update = {"ecs_subnets": list(subnet or settings.ecs_subnets)}
    update["ecs_security_groups"] = list(security_group or settings.ecs_security_groups)
    settings = settings.model_copy(update=update)
    if target is Target.AWS and not settings.ecs_subnets:
        raise typer.BadParameter(
            "the aws target runs Fargate tasks in at least one subnet: pass --subnet subnet-0abc (repeatable) "
            "or set CARTFLOW_ECS_SUBNETS=subnet-a,subnet-b",
            param_hint="--subnet",
        )
    checked = as_target(target.value)
    sys.stdout.write(render(checked, params_from_settings(settings, checked)) + "\n")
