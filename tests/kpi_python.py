"""docs/kpis.md in plain Python over raw CSV values: an oracle independent of Spark and DuckDB.

Rows are dicts of raw CSV text keyed by contract column (as the CSV header names them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

Row = Mapping[str, Any]


def half_up(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def utc_date(text: str) -> str:
    parsed = datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).date().isoformat()


def _s(value: Any) -> str:
    return "" if value is None else str(value).strip()


def python_lines(
    orders: Iterable[Row] = (), items: Iterable[Row] = (), products: Iterable[Row] = (), flat: Iterable[Row] = ()
) -> list[dict[str, Any]]:
    """The order-lines relation of docs/kpis.md from raw rows of both shapes."""
    order_by_id = {int(_s(o["order_id"])): o for o in orders}
    category_by_product = {int(_s(p["id"])): _s(p["category"]) for p in products}
    lines = []
    for item in items:
        order = order_by_id[int(_s(item["order_id"]))]
        if "Cancelled" in (_s(item["status"]), _s(order["status"])):
            continue
        lines.append(
            {
                "order": f"t:{int(_s(item['order_id']))}",
                "customer": f"t:{int(_s(order['user_id']))}",
                "date": utc_date(order["created_at"]),
                "category": category_by_product[int(_s(item["product_id"]))],
                "quantity": 1,
                "revenue": Decimal(_s(item["sale_price"])),
                "returned": _s(item["status"]) == "Returned"
                or bool(_s(item["returned_at"]))
                or _s(order["status"]) == "Returned",
            }
        )
    for line in flat:
        lines.append(
            {
                "order": f"f:{_s(line['order_id'])}",
                "customer": f"f:{_s(line['customer_id'])}",
                "date": _s(line["order_date"]),
                "category": _s(line["category"]),
                "quantity": int(_s(line["quantity"])),
                "revenue": int(_s(line["quantity"])) * Decimal(_s(line["unit_price"])),
                "returned": _s(line["returned"]).lower() == "true",
            }
        )
    return lines


def python_order_kpis(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for day in sorted({line["date"] for line in lines}):
        of_day = [line for line in lines if line["date"] == day]
        orders = {line["order"] for line in of_day}
        returned = {line["order"] for line in of_day if line["returned"]}
        out[day] = {
            "total_orders": len(orders),
            "total_revenue": half_up(sum((line["revenue"] for line in of_day), Decimal(0)), 2),
            "total_items_sold": sum(line["quantity"] for line in of_day),
            "return_rate": half_up(Decimal(len(returned)) / Decimal(len(orders)), 4),
            "unique_customers": len({line["customer"] for line in of_day}),
        }
    return out


def python_category_kpis(lines: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for key in sorted({(line["category"], line["date"]) for line in lines}):
        of_key = [line for line in lines if (line["category"], line["date"]) == key]
        revenue = sum((line["revenue"] for line in of_key), Decimal(0))
        orders = {line["order"] for line in of_key}
        returned = {line["order"] for line in of_key if line["returned"]}
        out[key] = {
            "daily_revenue": half_up(revenue, 2),
            "avg_order_value": half_up(revenue / len(orders), 2),
            "avg_return_rate": half_up(Decimal(len(returned)) / len(orders), 4),
        }
    return out


def order_kpis_by_date(rows: Any) -> dict[str, dict[str, Any]]:
    """A job's KpiRows.order_rows keyed like python_order_kpis."""
    return {r["order_date"]: {k: v for k, v in r.items() if k != "order_date"} for r in rows.order_rows}


def category_kpis_by_key(rows: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """A job's KpiRows.category_rows keyed like python_category_kpis."""
    return {
        (r["category"], r["order_date"]): {k: v for k, v in r.items() if k not in ("category", "order_date")}
        for r in rows.category_rows
    }
