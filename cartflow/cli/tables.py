"""The pipeline's read models as rich tables: batches, raw files, KPIs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from cartflow.core.batch_table import Chunk
    from cartflow.core.deps import Deps

_STATUS_COLORS = {"done": "green", "failed": "red", "processing": "yellow", "pending": "cyan"}


def batches_table(deps: Deps) -> Table:
    """The short view (`cartflow status`, the live table of `cartflow demo`)."""
    from cartflow.ops.views import batches

    t = Table(title="batches")
    for col in ("batch_id", "status", "files", "execution", "error"):
        t.add_column(col, overflow="fold")
    for c in batches(deps):
        t.add_row(
            c.batch_id,
            f"[{_STATUS_COLORS.get(c.status, 'white')}]{c.status}",
            str(len(c.file_paths)),
            (c.execution_arn or "").rsplit(":", 1)[-1],
            (c.error or "")[:60],
        )
    return t


def batches_detail_table(chunks: list[Chunk], title: str) -> Table:
    """The operator's view (`cartflow batches list`): adds attempt and creation time."""
    t = Table(title=title)
    for col in ("batch_id", "status", "files", "attempt", "created (UTC)", "execution", "error"):
        t.add_column(col, overflow="fold")
    for c in chunks:
        t.add_row(
            c.batch_id,
            f"[{_STATUS_COLORS.get(c.status, 'white')}]{c.status}",
            str(len(c.file_paths)),
            str(c.attempt),
            _when(c.created_at),
            (c.execution_arn or "").rsplit(":", 1)[-1],
            (c.error or "")[:120],
        )
    return t


def files_table(deps: Deps) -> Table:
    from cartflow.ops.views import files

    t = Table(title=f"raw files (s3://{deps.settings.bucket}/)")
    for col in ("key", "state", "batch_id", "quarantined rows", "reason"):
        t.add_column(col, overflow="fold")
    for f in files(deps):
        key = f.s3_path.split("/", 3)[-1]
        quarantined = "" if f.quarantined_rows is None else str(f.quarantined_rows)
        t.add_row(key, f.state, f.batch_id or "", quarantined, f.reason or "")
    return t


def kpi_tables(deps: Deps) -> list[Table]:
    from cartflow.ops.views import category_kpis, order_kpis

    ot = Table(title=f"OrderKPIs ({deps.settings.order_kpis_table})")
    ocols = ("order_date", "total_orders", "total_revenue", "total_items_sold", "return_rate", "unique_customers")
    for col in ocols:
        ot.add_column(col, justify="right")
    for r in order_kpis(deps):
        ot.add_row(*(str(r.get(c, "")) for c in ocols))
    ct = Table(title=f"CategoryKPIs ({deps.settings.category_kpis_table})")
    ccols = ("category", "order_date", "daily_revenue", "avg_order_value", "avg_return_rate")
    for col in ccols:
        ct.add_column(col, justify="right")
    for r in category_kpis(deps):
        ct.add_row(*(str(r.get(c, "")) for c in ccols))
    return [ot, ct]


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S") if ms else ""
