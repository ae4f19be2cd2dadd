"""The view model as HTML: the page (templates/index.html) and its refreshable sections."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from html import escape
from importlib import resources
from string import Template

from cartflow.dashboard import charts
from cartflow.dashboard.data import Dashboard

ORDER_COLUMNS = ("order_date", "total_orders", "total_revenue", "total_items_sold", "return_rate", "unique_customers")


def _a(v: object) -> str:
    return escape(str(v), quote=True)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts is not None else ""


def _num(name: str, v: Decimal | int) -> str:
    return f'<td class="num" data-col="{_a(name)}" data-value="{_a(v)}">{escape(str(v))}</td>'


def _category_table(d: Dashboard) -> str:
    rows = "".join(
        f'<tr data-category="{_a(r.category)}" data-date="{_a(r.order_date)}"><td>{escape(r.category)}</td>'
        f"<td>{escape(r.order_date)}</td>{_num('daily_revenue', r.daily_revenue)}"
        f"{_num('avg_order_value', r.avg_order_value)}{_num('avg_return_rate', r.avg_return_rate)}</tr>"
        for r in d.category_kpis
    )
    return (
        '<table id="category-kpis-table" class="data"><caption>CategoryKPIs (values of the chart)</caption>'
        "<thead><tr><th>category</th><th>order_date</th><th>daily_revenue</th><th>avg_order_value</th>"
        f"<th>avg_return_rate</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _order_table(d: Dashboard) -> str:
    head = "".join(f"<th>{c}</th>" for c in ORDER_COLUMNS)
    rows = "".join(
        f'<tr data-date="{_a(r.order_date)}"><td>{escape(r.order_date)}</td>'
        + "".join(_num(c, getattr(r, c)) for c in ORDER_COLUMNS[1:])
        + "</tr>"
        for r in d.order_kpis
    )
    return (
        '<table id="order-kpis-table" class="data"><caption>OrderKPIs (values of the charts)</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    )


def _share(v: float | None) -> str:
    return "" if v is None else f"{v:.2%}"


def _batch_table(d: Dashboard) -> str:
    rows = []
    for i, b in enumerate(d.batches):
        duration = "" if b.duration_seconds is None else f"{b.duration_seconds:.1f} s"
        rows.append(
            f'<tr data-batch-id="{_a(b.batch_id)}" data-status="{_a(b.status)}" '
            f'data-duration="{_a("" if b.duration_seconds is None else round(b.duration_seconds, 3))}" '
            f'data-quarantined-share="{_a("" if b.quarantined_share is None else b.quarantined_share)}">'
            f'<td>#{i + 1}</td><td class="id">{escape(b.batch_id)}</td>'
            f'<td><span class="status status-{_a(b.status)}">{escape(b.status)}</span></td>'
            f"<td>{_when(b.created_at)}</td><td>{duration}</td><td>{b.files}</td><td>{b.rejected_files}</td>"
            f"<td>{_share(b.quarantined_share)}</td><td>{b.attempt}</td><td>{escape(b.error or '')}</td></tr>"
        )
    return (
        '<table id="batches-table" class="data"><caption>Batches, oldest first</caption><thead><tr><th></th><th>batch_id</th>'
        "<th>state</th><th>created (UTC)</th><th>duration</th><th>files</th><th>rejected files</th>"
        f"<th>quarantined share</th><th>attempt</th><th>error</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _files_table(d: Dashboard) -> str:
    rows = []
    for f in d.files:
        reasons = [f.reason] if f.reason else []
        reasons += [f"{n} row{'s' if n != 1 else ''}: {rule}" for rule, n in f.quarantine_reasons.items()]
        rows.append(
            f'<tr data-key="{_a(f.key)}" data-state="{_a(f.state)}"><td class="id">{escape(f.key)}</td>'
            f'<td>{escape(f.state)}</td><td class="id">{escape(f.batch_id or "")}</td>'
            f'<td class="num">{"" if f.quarantined_rows is None else f.quarantined_rows}</td>'
            f"<td>{'<br>'.join(escape(r) for r in reasons)}</td><td>{_when(f.arrived_at)}</td></tr>"
        )
    return (
        f'<table id="files-table" class="data"><caption>Raw files of s3://{escape(d.bucket)}/</caption><thead><tr><th>key</th>'
        "<th>state</th><th>batch</th><th>quarantined rows</th><th>reasons</th><th>arrived (UTC)</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _delta(d: Dashboard) -> str:
    v = d.delta
    if not v.available:
        return f'<p id="delta-status" data-available="false" class="note">{escape(v.note)}</p>'
    agree = "agree" if v.agrees_with_dynamodb else "disagree"
    tables = "".join(
        f'<tr data-table="{_a(t.name)}"><td>{escape(t.name)}</td><td class="num">{"" if t.version is None else t.version}</td>'
        f'<td class="num" data-value="{t.rows}">{t.rows}</td></tr>'
        for t in v.tables
    )
    mismatches = "".join(f"<li>{escape(m)}</li>" for m in v.mismatches)
    return (
        f'<p id="delta-status" data-available="true" data-agrees="{str(bool(v.agrees_with_dynamodb)).lower()}" '
        f'class="{agree}">Delta kpis/ and DynamoDB {agree}. {escape(v.note)}.</p>'
        f'<table id="delta-table" class="data"><thead><tr><th>table</th><th>version</th><th>rows</th></tr></thead>'
        f"<tbody>{tables}</tbody></table>" + (f'<ul class="mismatches">{mismatches}</ul>' if mismatches else "")
    )


def sections(d: Dashboard) -> str:
    """Everything under the header: re-rendered on every poll and swapped in by dashboard.js."""
    status = {s: sum(1 for b in d.batches if b.status == s) for s in ("pending", "processing", "done", "failed")}
    summary = " · ".join(f'<span class="status status-{s}">{n} {s}</span>' for s, n in status.items())
    error = f'<p id="error" class="error">Could not read the pipeline: {escape(d.error)}</p>' if d.error else ""
    revenue = [(r.order_date, r.total_revenue) for r in d.order_kpis]
    orders = [(r.order_date, r.total_orders) for r in d.order_kpis]
    return f"""{error}
<p class="meta" id="generated" data-generated-at="{d.generated_at:.3f}">Updated {_when(d.generated_at)} UTC ·
 {len(d.batches)} batches: {summary} · {len(d.files)} files</p>
<section id="category-revenue"><h2>Daily revenue per category</h2>
{charts.category_revenue_chart(d.category_kpis, d.categories, d.dates)}
<details open><summary>data</summary>{_category_table(d)}</details></section>
<section id="order-kpis"><h2>Order KPIs over time</h2>
<div class="pair"><figure><figcaption>total_revenue</figcaption>{charts.line_chart("total_revenue", "total revenue", revenue, "{:,.0f}")}</figure>
<figure><figcaption>total_orders</figcaption>{charts.line_chart("total_orders", "total orders", orders, "{:,.1f}")}</figure></div>
{_order_table(d)}</section>
<section id="batches"><h2>Batch timeline</h2>
{charts.batch_timeline_chart(d.batches, d.generated_at)}
{_batch_table(d)}</section>
<section id="files"><h2>Files and their outcomes</h2>{_files_table(d)}</section>
<section id="delta"><h2>Delta tables</h2>{_delta(d)}</section>
"""


def page(d: Dashboard, refresh_seconds: float) -> str:
    template = Template((resources.files("cartflow.dashboard") / "templates" / "index.html").read_text(encoding="utf-8"))
    return template.substitute(
        bucket=escape(d.bucket),
        refresh_ms=int(refresh_seconds * 1000),
        refresh_seconds=f"{refresh_seconds:g}",
        # without JavaScript the page reloads itself a little less often
        noscript_refresh=max(int(refresh_seconds * 2), 1),
        sections=sections(d),
    )
