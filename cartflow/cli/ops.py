"""Operator commands: `cartflow batches list|retry`, `cartflow audit`, and one-line AWS errors.

Registered by cartflow/cli/app.py (``app.add_typer(batches_app, name="batches")``,
``app.command()(audit)``); the logic lives in cartflow.ops.actions.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from cartflow.core.config import get_settings
from cartflow.core.errors import explain
from cartflow.core.models import BatchStatus

F = TypeVar("F", bound=Callable[..., Any])
console = Console()
err_console = Console(stderr=True)

batches_app = typer.Typer(help="Batches: list them, retry a failed one", no_args_is_help=True)


def one_line_errors(fn: F) -> F:
    """Known infrastructure failures (endpoint down, table missing, bad settings) -> one line
    on stderr and exit 1; anything else keeps its traceback (it is a bug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            line = explain(exc, _endpoint())
            if line is None:
                raise
            err_console.print(f"[red]error:[/] {line}", highlight=False, soft_wrap=True)
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


def _deps() -> Any:
    from cartflow.core.deps import Deps

    return Deps.from_settings(get_settings())


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else ""


def batches_rich_table(chunks: list[Any], title: str) -> Table:
    t = Table(title=title)
    for col in ("batch_id", "status", "files", "attempt", "created (UTC)", "execution", "error"):
        t.add_column(col, overflow="fold")
    colors = {"done": "green", "failed": "red", "processing": "yellow", "pending": "cyan"}
    for c in chunks:
        t.add_row(
            c.batch_id,
            f"[{colors.get(c.status, 'white')}]{c.status}",
            str(len(c.file_paths)),
            str(c.attempt),
            _when(c.created_at),
            (c.execution_arn or "").rsplit(":", 1)[-1],
            (c.error or "")[:120],
        )
    return t


@batches_app.command("list")
@one_line_errors
def list_cmd(
    status: Annotated[BatchStatus | None, typer.Option(help="only batches in this status")] = None,
) -> None:
    """Every batch (oldest first) with status, files, attempt, execution and error."""
    from cartflow.ops.actions import list_batches, retry_command

    chunks = list_batches(_deps(), status)
    console.print(batches_rich_table(chunks, f"batches ({status.value})" if status else "batches"))
    failed = [c for c in chunks if c.status == BatchStatus.FAILED.value]
    if failed:
        console.print(f"{len(failed)} failed; re-run one with: {retry_command(failed[0].batch_id)}", highlight=False)


@batches_app.command("show")
@one_line_errors
def show_cmd(batch_id: Annotated[str, typer.Argument(help="a batch id (see cartflow batches list)")]) -> None:
    """The validation report of one batch: counts per dataset and rule, every file's outcome and reason."""
    from cartflow.cli.app import show_batch

    show_batch(batch_id)


@batches_app.command("retry")
@one_line_errors
def retry_cmd(batch_id: Annotated[str, typer.Argument(help="a failed batch's id")]) -> None:
    """Re-run a failed batch: failed -> pending; the stream trigger / controller start it."""
    from cartflow.ops.actions import RetryRefused, retry_batch

    try:
        result = retry_batch(_deps(), batch_id)
    except RetryRefused as refused:
        err_console.print(f"[red]refused:[/] {refused}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(
        f"batch {result.batch_id} queued again (attempt {result.attempt}); it starts as execution "
        f"{result.execution_name} when nothing else is in flight. Watch: cartflow batches list",
        highlight=False,
    )


@one_line_errors
def audit(
    stuck_after: Annotated[float, typer.Option(help="seconds before a waiting file counts as stuck")] = 300.0,
    all_files: Annotated[bool, typer.Option("--all/--summary", help="list every file, not only totals")] = True,
) -> None:
    """Every raw file ever seen and its one state, totals, and the exactly-once checks (exit 1 on a finding)."""
    from cartflow.ops.actions import audit as run_audit
    from cartflow.ops.views import ledger

    deps = _deps()
    rows = ledger(deps)
    if all_files:
        t = Table(title=f"files ({len(rows)} uploads)")
        for col in ("file", "state", "detail"):
            t.add_column(col, overflow="fold")
        for r in rows:
            t.add_row(r.s3_path.split("/", 3)[-1], r.outcome, r.detail)
        console.print(t)
    totals = Counter(r.outcome for r in rows)
    console.print(
        "totals: " + ", ".join(f"{k} {totals.get(k, 0)}" for k in ("processed", "rejected", "failed", "in progress")),
        highlight=False,
    )
    findings = run_audit(deps, stuck_after_s=stuck_after)
    if not findings:
        console.print("audit: ok (every file in exactly one state, at most one batch in flight)")
        return
    t = Table(title=f"audit: {len(findings)} finding(s)")
    for col in ("kind", "subject", "detail"):
        t.add_column(col, overflow="fold")
    for f in findings:
        t.add_row(f.kind, f.subject, f.detail)
    console.print(t)
    raise typer.Exit(1)
