"""Known failures as one line on stderr, for every command: exit 2 for bad usage (bad input,
bad CARTFLOW_* settings, a refused target), 1 for a failed operation."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.markup import escape

from cartflow.cli.context import err_console
from cartflow.core.config import get_settings
from cartflow.core.errors import BadInput, CartflowError, explain
from orchestrator.render import RenderError

USAGE = 2  # what click uses for a bad option; the user must change the command or a setting
FAILED = 1
# Local files the user named (an --out folder, a CSV): the OS error is the message.
_FILE_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)

F = TypeVar("F", bound=Callable[..., Any])


def one_line_errors(fn: F) -> F:
    """Known infrastructure failures (endpoint down, table missing, bad settings) and the
    project's own errors -> one line on stderr and exit 1; anything else keeps its traceback
    (it is a bug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            line = explain(exc, _endpoint())
            if line is None and isinstance(exc, CartflowError | RenderError):
                line = str(exc)  # the project's own errors are written as one actionable line
            if line is None and isinstance(exc, _FILE_ERRORS) and exc.filename is not None:
                line = f"{exc.filename}: {exc.strerror or type(exc).__name__}"
            if line is None:
                raise
            err_console.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(exit_code(exc)) from None

    return wrapper  # type: ignore[return-value]


def exit_code(exc: BaseException) -> int:
    """2 when the user has to change the command or a setting, 1 when an operation failed."""
    if isinstance(exc, BadInput | SettingsError | RenderError):
        return USAGE
    if isinstance(exc, ValidationError) and exc.title == "Settings":
        return USAGE
    return FAILED


def guard_commands(app: typer.Typer) -> typer.Typer:
    """Wrap every command of ``app`` (and of its sub-apps) in ``one_line_errors``."""
    for info in app.registered_commands:
        if info.callback and not getattr(info.callback, "__wrapped__", None):
            info.callback = one_line_errors(info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            guard_commands(group.typer_instance)
    return app


def _endpoint() -> str | None:
    try:
        return get_settings().aws_endpoint_url
    except Exception:  # the settings themselves are what is broken
        return None
