"""Validation outcomes as rich tables: ``cartflow batches show`` and ``cartflow contracts check``."""

from __future__ import annotations

from rich.table import Table

from cartflow.core.models import ValidationResult
from spark.jobs.rowcheck import FileReport

_STATUS_STYLE = {"passed": "green", "failed": "red", "accepted": "green", "rejected": "red", "quarantined": "yellow"}


def _styled(text: str) -> str:
    return f"[{_STATUS_STYLE.get(text, 'white')}]{text}[/]"


def validation_tables(result: ValidationResult) -> list[Table]:
    """Summary, per-dataset counts, per-rule counts and per-file outcomes of one batch."""
    summary = Table(title=f"batch {result.batch_id}", show_header=False)
    summary.add_column("field")
    summary.add_column("value", overflow="fold")
    summary.add_row("status", _styled(result.status))
    summary.add_row("shape", result.shape)
    summary.add_row("processing date(s)", ", ".join(result.processing_dates) or "(nothing written)")
    summary.add_row("quarantined share", f"{result.quarantined_share:.1%} (limit {result.max_quarantined_share:.0%})")
    for error in result.errors:
        summary.add_row("error", f"[red]{error}[/]")
    if result.result_uri:
        summary.add_row("result", result.result_uri)

    datasets = Table(title="datasets")
    for col in ("dataset", "contract", "files", "rejected files", "rows", "valid", "quarantined"):
        datasets.add_column(col, justify="left" if col == "dataset" else "right")
    for name, t in result.tables.items():
        datasets.add_row(
            name, f"v{t.contract_version}", str(t.files), str(t.rejected_files),
            str(t.input_rows), str(t.valid_rows), str(t.quarantined_rows),
        )  # fmt: skip

    by_rule = Table(title="quarantined rows per rule")
    for col in ("dataset", "rule", "rows"):
        by_rule.add_column(col, justify="right" if col == "rows" else "left", overflow="fold")
    for name, t in result.tables.items():
        for label, count in t.reasons.items():
            by_rule.add_row(name, label, str(count))

    files = Table(title="files")
    for col in ("file", "outcome", "rows", "valid", "quarantined", "reason"):
        files.add_column(col, overflow="fold")
    for f in result.files:
        counts = ("", "", "") if f.status == "rejected" else (str(f.rows), str(f.valid_rows), str(f.quarantined_rows))
        files.add_row(f.uri.split("/", 3)[-1], _styled(f.status), *counts, f.reason or "")
    return [summary, datasets, by_rule, files]


def check_tables(reports: list[FileReport], max_rows: int = 50) -> list[Table]:
    """One table of file outcomes, one of quarantined rows with their line and reasons."""
    files = Table(title="files")
    for col in ("file", "dataset", "outcome", "valid rows", "quarantined rows", "reason"):
        files.add_column(col, overflow="fold")
    rows = Table(title="quarantined rows")
    for col in ("file", "line", "reasons"):
        rows.add_column(col, overflow="fold")
    shown = 0
    for r in reports:
        quarantined = r.quarantined
        files.add_row(
            r.path, r.dataset, _styled(r.outcome),
            "" if r.reason else str(r.valid_rows), "" if r.reason else str(len(quarantined)), r.reason or "",
        )  # fmt: skip
        for row in quarantined:
            if shown < max_rows:
                rows.add_row(r.path, str(row.line), "\n".join(v.message for v in row.violations))
            shown += 1
    if shown > max_rows:
        rows.caption = f"{shown - max_rows} more quarantined rows not shown"
    return [files, rows] if shown else [files]
