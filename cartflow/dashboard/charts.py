"""Server-side SVG charts: no JavaScript library, nothing fetched by the browser.

Every mark carries its value in data attributes (``data-category``, ``data-date``,
``data-value``...) and a <title> tooltip, and every chart has an accessible table next to
it (render.py), so a person, a screen reader and a test all read the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from html import escape

from cartflow.dashboard.data import BatchRow, CategoryRow

# Colour-blind-friendly palette (Okabe-Ito + Tableau extras), cycled per category.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#999999",
    "#8C564B",
    "#17BECF",
    "#BCBD22",
    "#7F7F7F",
)
STATUS_COLOURS = {"done": "#2e7d32", "failed": "#c62828", "processing": "#f9a825", "pending": "#0277bd"}

WIDTH = 760
HEIGHT = 280
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 12, 40


def _a(v: object) -> str:
    return escape(str(v), quote=True)


def nice_max(value: float) -> float:
    """A round axis maximum >= value (1, 2, 2.5, 5 x 10^n)."""
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for m in (1, 2, 2.5, 5, 10):
        top = m * 10**exp
        if top >= value:
            return float(top)
    return float(10 ** (exp + 1))


def colour_of(categories: Sequence[str], category: str) -> str:
    return PALETTE[list(categories).index(category) % len(PALETTE)]


def _y_axis(top: float, plot_h: float, fmt: str = "{:,.0f}") -> list[str]:
    out = []
    for i in range(5):
        v = top * i / 4
        y = TOP + plot_h - plot_h * i / 4
        out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt.format(v))}</text>')
    return out


def category_revenue_chart(rows: Sequence[CategoryRow], categories: Sequence[str], dates: Sequence[str]) -> str:
    """Grouped bars: one group per order date, one bar per category sold that day."""
    if not rows:
        return '<p class="empty">No CategoryKPIs yet.</p>'
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = nice_max(float(max(r.daily_revenue for r in rows)))
    days = [d for d in dates if any(r.order_date == d for r in rows)]
    group_w = plot_w / len(days)
    parts = [
        f'<svg class="chart" id="category-revenue-chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'aria-label="Daily revenue per category" xmlns="http://www.w3.org/2000/svg">',
        *_y_axis(top, plot_h),
    ]
    for gi, d in enumerate(days):
        day_rows = [r for r in rows if r.order_date == d]
        bar_w = group_w * 0.8 / len(day_rows)
        x0 = LEFT + gi * group_w + group_w * 0.1
        for bi, r in enumerate(day_rows):
            h = plot_h * float(r.daily_revenue) / top
            x, y = x0 + bi * bar_w, TOP + plot_h - h
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}" '
                f'fill="{colour_of(categories, r.category)}" data-category="{_a(r.category)}" data-date="{_a(d)}" '
                f'data-value="{_a(r.daily_revenue)}"><title>{escape(f"{r.category} {d}: {r.daily_revenue}")}</title></rect>'
            )
        parts.append(
            f'<text class="tick" x="{LEFT + gi * group_w + group_w / 2:.1f}" y="{HEIGHT - BOTTOM + 18}" '
            f'text-anchor="middle">{escape(d)}</text>'
        )
    parts.append("</svg>")
    legend = "".join(
        f'<li><span class="swatch" style="background:{colour_of(categories, c)}"></span>{escape(c)}</li>' for c in categories
    )
    return "".join(parts) + f'<ul class="legend">{legend}</ul>'


def line_chart(chart_id: str, label: str, points: Sequence[tuple[str, Decimal | int]], fmt: str = "{:,.0f}") -> str:
    """One metric over order dates: a polyline with a marked point per date."""
    if not points:
        return f'<p class="empty">No {escape(label)} yet.</p>'
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = nice_max(float(max(v for _, v in points)))
    inset = 36  # room for the first and last date labels
    step = (plot_w - 2 * inset) / max(len(points) - 1, 1)
    coords = []
    for i, (_, v) in enumerate(points):
        x = LEFT + inset + (i * step if len(points) > 1 else plot_w / 2 - inset)
        coords.append((x, TOP + plot_h - plot_h * float(v) / top))
    parts = [
        f'<svg class="chart" id="{_a(chart_id)}" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" aria-label="{_a(label)}" '
        f'xmlns="http://www.w3.org/2000/svg">',
        *_y_axis(top, plot_h, fmt),
        '<polyline class="line" fill="none" points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords) + '"/>',
    ]
    for (d, v), (x, y) in zip(points, coords, strict=True):
        parts.append(
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="4" data-date="{_a(d)}" data-metric="{_a(chart_id)}" '
            f'data-value="{_a(v)}"><title>{escape(f"{d}: {v}")}</title></circle>'
        )
        parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">{escape(d)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


def batch_timeline_chart(batches: Sequence[BatchRow], now: float) -> str:
    """One lane per batch: waiting (created -> processing) pale, processing solid, by status colour."""
    if not batches:
        return '<p class="empty">No batches yet.</p>'
    lane = 22
    height = TOP + lane * len(batches) + BOTTOM
    start = min(b.created_at for b in batches)
    end = max([b.finished_at or now for b in batches] + [start + 1])
    plot_w = WIDTH - LEFT - RIGHT - 30  # room for the last time label

    def x(t: float) -> float:
        return LEFT + plot_w * (t - start) / (end - start)

    parts = [
        f'<svg class="chart" id="batch-timeline-chart" role="img" viewBox="0 0 {WIDTH} {height}" aria-label="Batch timeline" '
        f'xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, b in enumerate(batches):
        y = TOP + i * lane
        colour = STATUS_COLOURS.get(b.status, "#555")
        began = b.started_at if b.started_at is not None else b.created_at
        stop = b.finished_at if b.finished_at is not None else now
        parts.append(
            f'<g class="lane" data-batch-id="{_a(b.batch_id)}" data-status="{_a(b.status)}">'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 15}" text-anchor="end">#{i + 1}</text>'
            f'<rect class="wait" x="{x(b.created_at):.1f}" y="{y + 4}" width="{max(x(began) - x(b.created_at), 0):.1f}" '
            f'height="12" fill="{colour}" opacity="0.3"/>'
            f'<rect class="run" x="{x(began):.1f}" y="{y + 4}" width="{max(x(stop) - x(began), 2):.1f}" height="12" fill="{colour}">'
            f"<title>{escape(f'{b.batch_id}: {b.status}')}</title></rect></g>"
        )
    axis_y = TOP + lane * len(batches) + 16
    for i in range(5):
        t = start + (end - start) * i / 4
        parts.append(f'<text class="tick" x="{x(t):.1f}" y="{axis_y}" text-anchor="middle">{_clock(t)}</text>')
    parts.append("</svg>")
    return "".join(parts)
