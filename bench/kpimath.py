"""What the single-node engines share: the contract spec (read from the YAMLs) and the final rounding.

Both the polars and the DuckDB engine aggregate money as exact integer cents (a validated
price has at most 2 decimals, so ``round(price * 100)`` is exact) and hand the per-date /
per-category aggregates to :func:`order_kpi_rows` / :func:`category_kpi_rows`, which round
half-up after aggregation as docs/kpis.md says. Nothing here imports ``spark.jobs``:
the contracts are read through tests/oracle.py's loader (the spec, not the job's code).
"""

from __future__ import annotations

import decimal
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

MONEY = Decimal("0.01")
RATE = Decimal("0.0001")
_CTX = decimal.Context(prec=60, rounding=ROUND_HALF_UP)

# Lexical shapes a value must have before it is parsed (tests/oracle.py's, anchored).
INT_RE = r"^[+-]?[0-9]+$"
DOUBLE_RE = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
DATE_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
TS_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?( ?(UTC|Z|[+-][0-9]{2}(:?[0-9]{2})?))?$"
DECIMALS_RE = r"^[+-]?[0-9]*\.([0-9]*)"
INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}

# Referenced datasets first: their valid keys must exist for the reference checks.
DATASET_ORDER = ("orders", "products", "order_items", "order_lines")


def load_contracts() -> dict[str, Any]:
    """The contract YAMLs as tests/oracle.py reads them (Contract/Column dataclasses)."""
    from tests import oracle  # bench runs from a checkout (python -m bench), like the tests

    return oracle.load_contracts()


def money(cents: int) -> Decimal:
    return (Decimal(int(cents)) / 100).quantize(MONEY, rounding=ROUND_HALF_UP)


def rate(num: int, den: int) -> Decimal:
    return _CTX.divide(Decimal(int(num)), Decimal(int(den))).quantize(RATE, rounding=ROUND_HALF_UP)


def per_order(cents: int, orders: int) -> Decimal:
    return _CTX.divide(Decimal(int(cents)), Decimal(int(orders)) * 100).quantize(MONEY, rounding=ROUND_HALF_UP)


def order_kpi_rows(rows: list[tuple[str, int, int, int, int, int]]) -> dict[str, dict[str, Any]]:
    """(date, orders, revenue cents, items, returned orders, customers) -> OrderKPIs by date."""
    return {
        d: {
            "total_orders": int(n_orders),
            "total_revenue": money(cents),
            "total_items_sold": int(items),
            "return_rate": rate(n_returned, n_orders),
            "unique_customers": int(n_customers),
        }
        for d, n_orders, cents, items, n_returned, n_customers in rows
    }


def category_kpi_rows(rows: list[tuple[str, str, int, int, int]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(category, date, revenue cents, orders, returned orders) -> CategoryKPIs by (category, date)."""
    return {
        (cat, d): {
            "daily_revenue": money(cents),
            "avg_order_value": per_order(cents, n_orders),
            "avg_return_rate": rate(n_returned, n_orders),
        }
        for cat, d, cents, n_orders, n_returned in rows
    }
