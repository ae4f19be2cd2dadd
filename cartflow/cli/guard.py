"""Known infrastructure failures as one line on stderr and exit 1, for every command."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.markup import escape

from cartflow.cli.context import err_console
from cartflow.core.config import get_settings
from cartflow.core.errors import CartflowError, explain
from orchestrator.render import RenderError

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
            if line is None:
                raise
            err_console.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


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
