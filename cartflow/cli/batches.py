"""Operator commands: `cartflow batches list|show|retry` and `cartflow audit`.

The logic lives in cartflow.ops (actions and views); these only format its results.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from cartflow.cli.context import JsonOpt, console, deps, err_console, print_json
from cartflow.cli.guard import one_line_errors
from cartflow.cli.tables import batches_detail_table
from cartflow.core.models import BatchStatus, DataType

# Every state an upload can end in (and the one before), in the order totals are printed.
LEDGER_OUTCOMES = ("processed", "rejected", "superseded", "deleted", "failed", "in progress")

batches_app = typer.Typer(help="Batches: list them, retry a failed one", no_args_is_help=True)


@batches_app.command("list")
@one_line_errors
def list_cmd(
    status: Annotated[BatchStatus | None, typer.Option(help="only batches in this status")] = None,
) -> None:
    """Every batch (oldest first) with status, files, attempt, execution and error."""
    from cartflow.ops.actions import list_batches, retry_command

    chunks = list_batches(deps(tables=("batch_chunks_table",)), status)
    console.print(batches_detail_table(chunks, f"batches ({status.value})" if status else "batches"))
    failed = [c for c in chunks if c.status == BatchStatus.FAILED.value]
    if failed:
        console.print(f"{len(failed)} failed; re-run one with: {retry_command(failed[0].batch_id)}", highlight=False)


@batches_app.command("show")
@one_line_errors
def show_cmd(
    batch_id: Annotated[str, typer.Argument(help="a batch id (see cartflow batches list)")],
    as_json: JsonOpt = False,
) -> None:
    """The validation report of one batch: counts per dataset and rule, every file's outcome and reason."""
    from cartflow.cli.reports import validation_tables
    from cartflow.ops.views import validation_result

    try:
        result = validation_result(deps(), batch_id)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="BATCH_ID") from None
    if result is None:
        err_console.print(
            f"[red]error:[/] no validation result for batch {batch_id} (not validated yet, or unknown): see cartflow batches list",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if as_json:
        print_json(result)
        return
    for table in validation_tables(result):
        console.print(table)


@batches_app.command("retry")
@one_line_errors
def retry_cmd(
    batch_id: Annotated[str | None, typer.Argument(help="a failed batch's id")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="retry every failed batch, oldest first")] = False,
) -> None:
    """Re-run a failed batch (or all of them): failed -> pending; the stream trigger / controller start it."""
    from cartflow.ops.actions import RetryRefused, list_batches, retry_batch

    if (batch_id is None) == (not all_failed):
        raise typer.BadParameter("give a BATCH_ID or --all-failed (not both)", param_hint="BATCH_ID")
    d = deps(tables=("batch_chunks_table",))
    ids = [batch_id] if batch_id else [c.batch_id for c in list_batches(d, BatchStatus.FAILED)]
    if not ids:
        console.print("no failed batches: nothing to retry")
        return
    refused_any = False
    for one in ids:
        try:
            result = retry_batch(d, one)
        except RetryRefused as refused:
            err_console.print(f"[red]refused:[/] {refused}", highlight=False, soft_wrap=True)
            refused_any = True
            continue
        console.print(
            f"batch {result.batch_id} queued again (attempt {result.attempt}); it starts as execution "
            f"{result.execution_name} when nothing else is in flight. Watch: cartflow batches list",
            highlight=False,
        )
    if refused_any:
        raise typer.Exit(1)


@one_line_errors
def backfill(
    start: Annotated[datetime, typer.Option("--from", formats=["%Y-%m-%d"], help="first upload day (UTC), YYYY-MM-DD")],
    end: Annotated[datetime, typer.Option("--to", formats=["%Y-%m-%d"], help="last upload day (UTC), inclusive")],
    dataset: Annotated[DataType | None, typer.Option(help="only this dataset's files")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the batches it would create, create nothing")] = False,
) -> None:
    """Re-run archived uploads through the current contracts and KPI definitions.

    Each done batch uploaded in the range becomes a new batch reading its archived copies and
    replacing its rows (and KPIs of the dates they touch); one batch is in flight at a time.
    """
    from cartflow.ops.actions import list_batches
    from cartflow.ops.backfill import create_backfill, plan_backfill

    d = deps(tables=("batch_chunks_table", "events_table"))
    plan = plan_backfill(list_batches(d), start.date(), end.date(), dataset)
    if not plan:
        console.print(f"no done batches uploaded from {start.date()} to {end.date()}: nothing to backfill")
        return
    t = Table(title=f"backfill: {len(plan)} batch(es){' (dry run: nothing created)' if dry_run else ''}")
    for col in ("new batch", "re-runs", "files"):
        t.add_column(col, overflow="fold")
    for b in plan:
        t.add_row(b.batch_id, b.source.batch_id, str(len(b.files)))
    console.print(t)
    if dry_run:
        return
    created = create_backfill(d, plan)
    console.print(f"{len(created)} batch(es) queued; watch: cartflow wait ; cartflow batches list", highlight=False)


@one_line_errors
def audit(
    stuck_after: Annotated[float, typer.Option(help="seconds before a waiting file counts as stuck")] = 300.0,
    all_files: Annotated[bool, typer.Option("--all/--summary", help="list every file, not only totals")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Every raw file ever seen and its one state, totals, and the exactly-once checks (exit 1 on a finding)."""
    from cartflow.ops.actions import audit as run_audit
    from cartflow.ops.views import ledger

    d = deps(tables=("events_table", "batch_chunks_table"))
    rows = ledger(d)
    if as_json:
        found = run_audit(d, stuck_after_s=stuck_after)
        counted = Counter(r.outcome for r in rows)
        print_json(
            {
                "files": rows if all_files else [],
                "totals": {k: counted.get(k, 0) for k in LEDGER_OUTCOMES},
                "findings": found,
                "ok": not found,
            }
        )
        raise typer.Exit(1 if found else 0)
    if all_files:
        t = Table(title=f"files ({len(rows)} uploads)")
        for col in ("file", "version", "state", "detail"):
            t.add_column(col, overflow="fold")
        for r in rows:
            t.add_row(r.s3_path.split("/", 3)[-1], r.version_id or "", r.outcome, r.detail)
        console.print(t)
    totals = Counter(r.outcome for r in rows)
    console.print(
        "totals: " + ", ".join(f"{k} {totals.get(k, 0)}" for k in LEDGER_OUTCOMES),
        highlight=False,
    )
    findings = run_audit(d, stuck_after_s=stuck_after)
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
