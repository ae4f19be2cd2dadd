"""What the commands share: the two consoles, Deps built from the settings, the fixtures folder."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from cartflow.core.config import Settings, get_settings

if TYPE_CHECKING:
    from cartflow.core.deps import Deps

# Piped or captured output (grep, CI logs, tests) has no terminal width to fit: rich would
# fall back to 80 columns and break reasons mid-word, so such output gets wide lines.
_PIPE_WIDTH = 200
console = Console(width=None if sys.stdout.isatty() else _PIPE_WIDTH)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else _PIPE_WIDTH)

# The sample uploads ship as package data of `fixtures` (the repo folder in an editable install).
FIXTURES = Path(str(resources.files("fixtures")))


def deps(settings: Settings | None = None) -> Deps:
    # Imported on use: building clients pulls in boto3, which `--help` should not pay for.
    from cartflow.core.deps import Deps

    return Deps.from_settings(settings or get_settings())
