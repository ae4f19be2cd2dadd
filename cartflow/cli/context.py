"""What the commands share: the two consoles, Deps built from the settings, the fixtures folder,
the one "target: ..." line and the guard against writing to real AWS by accident."""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from cartflow.core.config import ENDPOINT_EXAMPLE, ENDPOINT_VARIABLES, Settings, get_settings
from cartflow.core.exceptions import CartflowError

if TYPE_CHECKING:
    from cartflow.core.deps import Deps

# Piped or captured output (grep, CI logs, tests) has no terminal width to fit: rich would
# fall back to 80 columns and break reasons mid-word, so such output gets wide lines.
_PIPE_WIDTH = 200
console = Console(width=None if sys.stdout.isatty() else _PIPE_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _PIPE_WIDTH)


def fixtures_dir() -> Path:
    """The sample uploads: package data of `fixtures` (the repo folder in an editable install).

    Resolved on use, not at import: the container images ship without them, and every other
    command must still start there."""
    try:
        return Path(str(resources.files("fixtures")))
    except ModuleNotFoundError:
        raise CartflowError("the sample fixtures are not installed here: give a folder of <dataset>/<file>.csv") from None


JsonOpt = Annotated[bool, typer.Option("--json", help="one JSON document on stdout instead of tables")]
YesOpt = Annotated[bool, typer.Option("--yes", help=f"allow writing to real AWS (no {' / '.join(ENDPOINT_VARIABLES)} set)")]

_announced: set[str] = set()


def deps(settings: Settings | None = None, tables: tuple[str, ...] = ()) -> Deps:
    """Deps for the command; the first one built also prints where requests go (stderr, once).

    ``tables`` names the settings of the tables the command reads (``"events_table"``): a
    missing one is reported by name (`cartflow resources apply`) before anything is read.
    """
    # Imported on use: building clients pulls in boto3, which `--help` should not pay for.
    from cartflow.core.deps import Deps
    from cartflow.core.errors import Needs, check_ready

    d = Deps.from_settings(settings or get_settings())
    announce_target(d.settings)
    if tables:
        needs = Needs(tables=tuple(getattr(d.settings, t) for t in tables))
        check_ready(d.settings.aws_endpoint_url, d.clients, needs)
    return d


def announce_target(settings: Settings) -> None:
    """``target: emulator URL`` or ``target: AWS account N, region R`` (STS), once per process."""
    if _announced:
        return
    if settings.aws_endpoint_url:
        line = f"target: emulator {settings.aws_endpoint_url}"
    else:
        account = aws_account(settings)
        line = f"target: AWS account {account}, region {settings.region}"
    _announced.add(line)
    err_console.print(line, highlight=False, soft_wrap=True)


def aws_account(settings: Settings) -> str:
    """The account the credentials belong to (STS get-caller-identity, one quick attempt)."""
    import boto3
    from botocore.config import Config

    from cartflow.core.errors import NO_ENDPOINT, InfraError, explain

    quick = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=3, read_timeout=5)
    try:
        sts = boto3.session.Session(region_name=settings.region).client("sts", config=quick)
        return str(sts.get_caller_identity()["Account"])
    except Exception as exc:
        line = explain(exc, None)
        if line is None:
            raise
        if NO_ENDPOINT not in line:
            line += f"; the target is {NO_ENDPOINT}: for the emulator set CARTFLOW_AWS_ENDPOINT_URL={ENDPOINT_EXAMPLE}"
        raise InfraError(line) from exc


def require_local(settings: Settings, yes: bool, command: str) -> None:
    """A local-only command (seed, resources apply) writes to real AWS only when asked (--yes)."""
    from cartflow.core.errors import NO_ENDPOINT, BadInput

    if settings.aws_endpoint_url is None and not yes:
        raise BadInput(
            f"refusing to run `cartflow {command}` against {NO_ENDPOINT}: set "
            f"CARTFLOW_AWS_ENDPOINT_URL={ENDPOINT_EXAMPLE} for the emulator, or pass --yes to write to your AWS account"
        )


def print_json(document: Any) -> None:
    """One JSON document on stdout (the --json output of every command)."""
    from cartflow.ops.views import jsonable

    sys.stdout.write(json.dumps(jsonable(document), indent=2, sort_keys=False) + "\n")
