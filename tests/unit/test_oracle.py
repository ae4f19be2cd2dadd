"""The oracle against numbers computed by hand (inline data and fixtures/*.yaml)."""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import oracle

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
FLAT_HEADER = "order_id,customer_id,order_date,category,product_id,quantity,unit_price,returned\n"


def _flat(tmp_path: Path, body: str, name: str = "order_lines_part1.csv") -> dict[str, list[Path]]:
    folder = tmp_path / "order_lines"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(FLAT_HEADER + body)
    return {"order_lines": [path]}


def _batch(paths: list[str]) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for p in paths:
        out.setdefault(Path(p).parent.name, []).append(FIXTURES / p)
    return out


# --- inline, hand-computed ------------------------------------------------------------------
def test_seed_002_worked_example(tmp_path: Path) -> None:
    batch = _flat(
        tmp_path,
        "ORD123,CUST001,2025-07-06,Electronics,PROD001,2,199.99,false\nORD124,CUST002,2025-07-06,Books,PROD002,1,29.99,true\n",
    )
    orders, cats = oracle.expected_kpis(batch)
    # 2*199.99 + 29.99 = 429.97; 3 items; 1 of 2 orders returned; 2 customers.
    assert orders == {
        "2025-07-06": {
            "total_orders": 2,
            "total_revenue": Decimal("429.97"),
            "total_items_sold": 3,
            "return_rate": Decimal("0.5"),
            "unique_customers": 2,
        }
    }
    assert cats[("Electronics", "2025-07-06")] == {
        "daily_revenue": Decimal("399.98"),
        "avg_order_value": Decimal("399.98"),  # one order of 2 items: per order, not 199.99 per item
        "avg_return_rate": Decimal("0"),
    }
    assert cats[("Books", "2025-07-06")]["avg_return_rate"] == Decimal("1")


def test_aov_is_per_order_and_rounds_half_up(tmp_path: Path) -> None:
    batch = _flat(
        tmp_path,
        # Electronics: 3 lines in 2 orders -> 489.97 / 2 = 244.985 -> 244.99 (half-up; a float gives 244.98)
        "A1,C1,2025-07-06,Electronics,P1,1,199.99,false\n"
        "A1,C1,2025-07-06,Electronics,P2,1,200.00,true\n"
        "A2,C2,2025-07-06,Electronics,P1,1,89.98,false\n"
        # Books: 1/3 orders returned -> 0.3333; 2/3 -> 0.6667
        "B1,C3,2025-07-07,Books,P9,1,10.00,true\n"
        "B2,C3,2025-07-07,Books,P9,1,10.00,false\n"
        "B3,C4,2025-07-07,Books,P9,1,10.00,false\n",
    )
    orders, cats = oracle.expected_kpis(batch)
    assert cats[("Electronics", "2025-07-06")]["avg_order_value"] == Decimal("244.99")
    assert cats[("Electronics", "2025-07-06")]["avg_return_rate"] == Decimal("0.5")
    assert cats[("Books", "2025-07-07")]["avg_return_rate"] == Decimal("0.3333")
    assert orders["2025-07-07"]["unique_customers"] == 2
    assert str(orders["2025-07-06"]["return_rate"]) == "0.5000"  # 4 dp, as DynamoDB will get it


def test_three_table_rules(tmp_path: Path) -> None:
    """Cancelled items/orders give no line; returns by item status, returned_at or order status."""
    for ds in ("orders", "order_items", "products"):
        (tmp_path / ds).mkdir()
    (tmp_path / "products" / "p.csv").write_text(
        "id,cost,category,name,brand,retail_price,department,sku,distribution_center_id\n"
        "1,5.00,Jeans,J,B,10.00,Men,S1,1\n2,5.00,Swim,S,B,20.00,Women,S2,1\n"
    )
    (tmp_path / "orders" / "o.csv").write_text(
        "order_id,user_id,status,gender,created_at,returned_at,shipped_at,delivered_at,num_of_item\n"
        "1,10,Complete,M,2025-07-06 23:59:59,,,,2\n"  # UTC date 07-06 although items are created 07-07
        "2,11,Cancelled,F,2025-07-06 08:00:00,,,,1\n"  # whole order cancelled
        "3,10,Returned,M,2025-07-06 09:00:00,2025-07-09 09:00:00,,,1\n"  # order-level return
        "4,12,Shipped,F,2025-07-06 10:00:00,,,,1\n"  # items never received: not counted
    )
    (tmp_path / "order_items" / "i.csv").write_text(
        "id,order_id,user_id,product_id,inventory_item_id,status,created_at,shipped_at,delivered_at,returned_at,sale_price\n"
        "1,1,10,1,,Complete,2025-07-07 00:00:01,,,2025-07-10 10:00:00,10.00\n"  # returned via returned_at
        "2,1,10,2,,Cancelled,2025-07-07 00:00:01,,,,20.00\n"  # cancelled item
        "3,2,11,1,,Processing,2025-07-06 08:00:00,,,,10.00\n"  # item of a cancelled order
        "4,3,10,2,,Complete,2025-07-06 09:00:00,,,,20.00\n"
    )
    batch = oracle.batch_from_dir(tmp_path)
    orders, cats = oracle.expected_kpis(batch)
    assert orders == {
        "2025-07-06": {
            "total_orders": 2,  # orders 1 and 3
            "total_revenue": Decimal("30.00"),
            "total_items_sold": 2,
            "return_rate": Decimal("1"),
            "unique_customers": 1,  # both t:10
        }
    }
    assert set(cats) == {("Jeans", "2025-07-06"), ("Swim", "2025-07-06")}
    assert cats[("Swim", "2025-07-06")]["daily_revenue"] == Decimal("20.00")  # the cancelled 20.00 is out


def test_namespacing_and_latest_batch_wins(tmp_path: Path) -> None:
    b1 = _flat(tmp_path / "b1", "7,1,2025-07-06,Books,P1,1,5.00,false\n8,1,2025-07-07,Books,P1,1,5.00,false\n")
    b2 = _flat(tmp_path / "b2", "7,1,2025-07-06,Books,P1,1,5.00,true\n")  # re-sent: now returned
    orders, _ = oracle.expected_kpis(b2, prior=[b1])
    assert set(orders) == {"2025-07-06"}  # only the touched date is rewritten
    assert orders["2025-07-06"]["total_orders"] == 1  # replaced, not double counted
    assert orders["2025-07-06"]["return_rate"] == Decimal("1")
    state, _ = oracle.expected_table_state([b1, b2])
    assert state["2025-07-07"]["total_orders"] == 1


def test_duplicate_key_rejects_every_copy(tmp_path: Path) -> None:
    batch = _flat(tmp_path, "X,C,2025-07-06,Books,P,1,5.00,false\nX,C,2025-07-06,Books,P,2,5.00,false\n")
    rejected = oracle.quarantined_keys(batch)
    assert [r.reason for r in rejected] == ["order_id,product_id: duplicate key"] * 2
    assert oracle.expected_kpis(batch) == ({}, {})


def test_duplicate_with_a_broken_copy_and_blank_values(tmp_path: Path) -> None:
    batch = _flat(
        tmp_path,
        "X,C,2025-07-06,Books,P,1,5.00,false\n"
        "X,C,2025-07-06,Books,P,1,abc,false\n"  # broken copy: keeps its own reason, still a copy
        "Y,  ,2025-07-06,Books,P,1,5.00,false\n"  # blank after trimming = missing
        "Z,C,2025-07-06,Books,P,1,5.00,TRUE\n"  # booleans: true/false, any case
        "W,C,2025-07-06,Books,P,1,5.00,1\n",
    )
    reasons = {(r.key, r.reason) for r in oracle.quarantined_keys(batch)}
    assert reasons == {
        (("X", "P"), "order_id,product_id: duplicate key"),
        (("X", "P"), "unit_price: not a valid double"),
        (("Y", "P"), "customer_id: required value missing"),
        (("W", "P"), "returned: not a valid boolean"),
    }


def test_a_file_without_the_contract_columns_is_rejected_and_the_batch_goes_on() -> None:
    broken = FIXTURES / "broken/orders/orders_missing_columns.csv"
    valid = _batch(["valid/order_lines/order_lines_part1.csv"])
    o = oracle.load_valid([{**valid, "orders": [broken]}])
    assert [path for path, _ in o.rejected_files] == [str(broken)]
    state, _ = oracle.expected_table_state([{**valid, "orders": [broken]}])
    assert state == oracle.expected_table_state([valid])[0]


def test_a_batch_over_the_quarantine_threshold_fails_and_writes_nothing() -> None:
    broken = oracle.batch_from_dir(FIXTURES / "broken")
    with pytest.raises(oracle.StructuralError, match="quarantined"):
        oracle.Oracle(max_quarantined_share=0.9).add_batch(broken)
    valid = _batch(["valid/order_lines/order_lines_part1.csv"])
    state, _ = oracle.expected_table_state([valid, broken], skip_failed=True, max_quarantined_share=0.9)
    assert set(state) == {"2025-07-06", "2025-07-07"}


# --- fixtures vs the hand-written expectations ------------------------------------------------
def test_invalid_fixture_quarantine_matches_expected_yaml() -> None:
    spec = yaml.safe_load((FIXTURES / "invalid/expected_quarantine.yaml").read_text())
    batch = oracle.batch_from_dir(FIXTURES / "invalid")
    contracts = oracle.load_contracts()
    got = sorted((str(Path(r.file).relative_to(FIXTURES / "invalid")), r.key, r.reason) for r in oracle.quarantined_keys(batch))
    want = sorted(
        (
            e["file"],
            tuple(e["key"][k] for k in contracts[Path(e["file"]).parent.name].key),
            e["reason"],
        )
        for e in spec["rows"]
    )
    assert got == want


def test_expected_quarantine_lines_point_at_their_rows() -> None:
    """The hand-written line numbers are right (a reader of the YAML relies on them)."""
    spec = yaml.safe_load((FIXTURES / "invalid/expected_quarantine.yaml").read_text())
    for e in spec["rows"]:
        line = (FIXTURES / "invalid" / e["file"]).read_text().splitlines()[e["line"] - 1]
        for value in e["key"].values():
            assert value in line.split(","), (e, line)


def _expected(name: str, scenarios: dict[str, Any]) -> tuple[dict, dict]:
    sc = scenarios[name]
    orders = {d: {k: (Decimal(v) if isinstance(v, str) else v) for k, v in row.items()} for d, row in sc["order_kpis"].items()}
    rows: list[dict[str, Any]] = []
    if "category_kpis" in sc:
        rows = list(sc["category_kpis"])
    for other in sc.get("category_kpis_from", []):
        rows += scenarios[other]["category_kpis"]
    cats = {(r["category"], r["order_date"]): r for r in rows}
    if "category_kpis_base" in sc:
        cats = _expected(sc["category_kpis_base"], scenarios)[1]
        cats = {k: dict(v, category=k[0], order_date=k[1]) for k, v in cats.items()}
        cats |= {(r["category"], r["order_date"]): r for r in sc["category_kpis_changed"]}
    cats = {k: {a: Decimal(r[a]) for a in ("daily_revenue", "avg_order_value", "avg_return_rate")} for k, r in cats.items()}
    return orders, cats


SCENARIOS = yaml.safe_load((FIXTURES / "expected_kpis.yaml").read_text())["scenarios"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_fixture_scenarios_match_hand_computed_kpis(name: str) -> None:
    batches = [_batch(b) for b in SCENARIOS[name]["batches"]]
    assert oracle.expected_table_state(batches) == _expected(name, SCENARIOS)
    *prior, last = batches
    touched = oracle.load_valid(batches).touched_dates[-1]
    assert sorted(touched) == SCENARIOS[name]["touched_dates"]
    orders, _ = oracle.expected_kpis(last, prior=prior)
    assert sorted(orders) == [d for d in SCENARIOS[name]["touched_dates"] if d in orders]


def test_valid_fixtures_have_no_rejects() -> None:
    assert oracle.quarantined_keys(oracle.batch_from_dir(FIXTURES / "valid")) == []
    update = oracle.batch_from_dir(FIXTURES / "update")
    # order_items_update references order 1011 from the earlier batch: valid only with it.
    assert oracle.quarantined_keys(update, prior=[oracle.batch_from_dir(FIXTURES / "valid")]) == []
    assert [r.reason for r in oracle.quarantined_keys(update)] == ["order_id: no such orders"]
