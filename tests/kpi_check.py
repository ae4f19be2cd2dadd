"""Compare KPI rows read from DynamoDB with the oracle's expectation (integration + e2e)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from tests.oracle import Batch, expected_table_state


def as_plain(rows: list[dict[str, Any]], key: tuple[str, ...]) -> dict[Any, dict[str, Decimal]]:
    out = {}
    for r in rows:
        k = tuple(r[c] for c in key) if len(key) > 1 else r[key[0]]
        out[k] = {c: Decimal(str(v)) for c, v in r.items() if isinstance(v, Decimal | int | float) and c not in key}
    return out


def assert_kpis_equal_oracle(
    order_rows: list[dict[str, Any]],
    category_rows: list[dict[str, Any]],
    batches_in_order: Sequence[Batch],
    max_quarantined_share: float = 1.0,
    contracts: dict[str, Any] | None = None,
) -> None:
    """Every key and every attribute the oracle expects, exactly (both sides are rounded Decimals).
    ``contracts``: the oracle's own reading of a contracts folder (tests.oracle.load_contracts)."""
    want_orders, want_cats = expected_table_state(
        batches_in_order, skip_failed=True, max_quarantined_share=max_quarantined_share, contracts=contracts
    )
    assert want_orders and want_cats, "the oracle expects KPIs for these batches"
    got_orders = as_plain(order_rows, ("order_date",))
    got_cats = as_plain(category_rows, ("category", "order_date"))
    assert set(got_orders) == set(want_orders)
    assert set(got_cats) == set(want_cats)
    for d, want in want_orders.items():
        for attr, value in want.items():
            assert got_orders[d][attr] == Decimal(str(value)), (d, attr, got_orders[d])
    for k, want in want_cats.items():
        for attr, value in want.items():
            assert got_cats[k][attr] == Decimal(str(value)), (k, attr, got_cats[k])
