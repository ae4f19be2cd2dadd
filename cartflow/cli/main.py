"""The root `cartflow` app: mounts every topic's commands and sub-apps, then guards them all.

Registration order is the order `cartflow --help` lists (typer puts commands before groups).
Topic modules never import each other or this module; what they share is in context.py,
guard.py, tables.py and reports.py.
"""

from __future__ import annotations

from typing import Annotated

import typer

from cartflow import __version__
from cartflow.cli import batches, contracts, dashboard, data, deploy, doctor, images, resources, stack
from cartflow.cli.guard import guard_commands

# rich_markup_mode=None: plain click help and errors; a usage error is one "Error: ..." line
# that is never wrapped into a panel, and help text is never parsed as markup.
app = typer.Typer(
    help="cartflow: event-driven e-commerce data pipeline", no_args_is_help=True, add_completion=True, rich_markup_mode=None
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"cartflow {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print the version and exit")
    ] = False,
) -> None:
    """cartflow: event-driven e-commerce data pipeline."""


app.command("audit")(batches.audit)
app.command("backfill")(batches.backfill)
app.command("deploy")(deploy.deploy_cmd)
app.command("deploy-template")(deploy.template_cmd)
app.command("status")(stack.status)
app.command("files")(data.files)
app.command("kpis")(data.kpis)
app.command("seed")(data.seed)
app.command("render-state-machine")(resources.render_state_machine)
app.command("serve")(stack.serve)
app.command("healthcheck")(stack.healthcheck)
app.command("jars")(stack.jars)
app.command("generate")(data.generate)
app.command("demo")(stack.demo)
app.command("up")(stack.up)
app.command("down")(stack.down)
app.command("logs")(stack.logs)
app.command("wait")(stack.wait)
app.command("doctor")(doctor.doctor)
app.command("dashboard")(dashboard.dashboard)

app.add_typer(resources.resources_app, name="resources")
app.add_typer(contracts.contracts_app, name="contracts")
app.add_typer(batches.batches_app, name="batches")
app.add_typer(images.images_app, name="images")

guard_commands(app)  # endpoint down / table missing / bad CARTFLOW_* -> one line on stderr, exit 1
