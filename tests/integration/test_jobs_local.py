"""The Spark jobs end to end on local disk: real Spark (local[2]), real Delta files.

Validated/quarantined rows are read back with the ``deltalake`` package (delta-rs), an
independent reader. Expected KPIs are computed in this file with plain Python from the CSV
rows the test wrote, not taken from the implementation.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyspark")
deltalake = pytest.importorskip("deltalake")

from pyspark.sql import SparkSession  # noqa: E402

from cartflow.core.config import Settings  # noqa: E402
from cartflow.core.models import BatchInput  # noqa: E402
from spark.jobs.transform import DynamoKpiSink, KpiRows, run_transform  # noqa: E402
from spark.jobs.validation import run_validation  # noqa: E402
from tests import kpi_python  # noqa: E402
from tests.kpi_python import category_kpis_by_key, order_kpis_by_date, python_category_kpis, python_order_kpis  # noqa: E402
from tests.timings import TIMINGS  # noqa: E402

pytestmark = pytest.mark.integration


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture()
def settings() -> Settings:
    # file:// warehouse: S3 unused. No quarantine threshold: these tests look at the rows.
    return Settings(aws_endpoint_url="http://127.0.0.1:9", bucket="cartflow-test", max_quarantined_share=1.0)


@dataclass
class RecordingSink:
    writes: list[KpiRows] = field(default_factory=list)

    def write(self, rows: KpiRows, batch_id: str) -> None:
        self.writes.append(rows)


@dataclass
class Lake:
    """A warehouse under tmp_path plus helpers to write raw CSVs and run the jobs."""

    root: Path
    spark: SparkSession
    settings: Settings

    @property
    def warehouse(self) -> str:
        return self.root.joinpath("warehouse").as_uri()

    def csv(self, name: str, header: list[str], rows: list[list[Any]]) -> str:
        path = self.root / "raw" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
        return path.as_uri()

    def text(self, name: str, content: str) -> str:
        path = self.root / "raw" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        return path.as_uri()

    def batch(self, batch_id: str, **paths: list[str]) -> BatchInput:
        return BatchInput(batch_id=batch_id, group_key="g", bucket="cartflow-test", processing_date="2025-07-08", **paths)

    def validate(self, batch: BatchInput):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        result = run_validation(self.spark, self.settings, batch, self.warehouse)
        TIMINGS["validate"].append(time.perf_counter() - started)
        return result

    def transform(self, batch: BatchInput, sink: Any = None):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        result = run_transform(self.spark, self.settings, batch, self.warehouse, sink=sink or RecordingSink())
        TIMINGS["transform"].append(time.perf_counter() - started)
        return result

    def table(self, *parts: str) -> list[dict[str, Any]]:
        # delta-rs's own query engine: no pyarrow needed (arro3 columns -> Python values).
        dt = deltalake.DeltaTable(str(self.root.joinpath("warehouse", *parts)))
        table = deltalake.QueryBuilder().register("t", dt).execute("SELECT * FROM t").read_all()
        columns = {name: table.column(name).to_pylist() for name in table.column_names}
        return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]

    def has_table(self, *parts: str) -> bool:
        return self.root.joinpath("warehouse", *parts, "_delta_log").is_dir()


@pytest.fixture()
def lake(tmp_path: Path, spark: SparkSession, settings: Settings) -> Lake:
    return Lake(tmp_path, spark, settings)


# ----------------------------------------------------------------------------- test data

ORDERS_H = ["order_id", "user_id", "status", "gender", "created_at", "returned_at", "shipped_at", "delivered_at", "num_of_item"]
ITEMS_H = [
    "id",
    "order_id",
    "user_id",
    "product_id",
    "inventory_item_id",
    "status",
    "created_at",
    "shipped_at",
    "delivered_at",
    "returned_at",
    "sale_price",
]
PRODUCTS_H = ["id", "cost", "category", "name", "brand", "retail_price", "department", "sku", "distribution_center_id"]
LINES_H = ["order_id", "customer_id", "order_date", "category", "product_id", "quantity", "unit_price", "returned"]

PRODUCTS = [
    [1, "5.5", "Jeans", "J1", "Acme", "20", "Men", "s1", 1],
    [2, "3", "Tops", "T1", "Acme", "10", "Women", "s2", 1],
]
ORDERS = [
    [101, 1, "Complete", "M", "2025-07-06 10:00:00", "", "", "", 2],
    [102, 2, "Returned", "F", "2025-07-06T23:30:00Z", "2025-07-08 10:00:00", "", "", 1],
    [103, 1, "Cancelled", "M", "2025-07-06 12:00:00", "", "", "", 1],
    [104, 3, "Shipped", "F", "2025-07-07 01:00:00+00:00", "", "", "", 2],
    [105, 4, "Complete", "", "2025-07-07 22:00:00-05:00", "", "", "", 1],  # 2025-07-08 in UTC
]
ITEMS = [
    [1, 101, 1, 1, "", "Complete", "2025-07-06 10:00:00", "", "", "", "19.99"],
    [2, 101, 1, 2, "", "Returned", "2025-07-06 10:00:00", "", "", "2025-07-07 09:00:00", "10.05"],
    [3, 102, 2, 2, "", "Shipped", "2025-07-06 23:30:00", "", "", "", "9.5"],
    [4, 103, 1, 1, "", "Complete", "2025-07-06 12:00:00", "", "", "", "20"],
    [5, 104, 3, 1, "", "Shipped", "2025-07-07 01:00:00", "", "", "", "15.15"],
    [6, 104, 3, 2, "", "Cancelled", "2025-07-07 01:00:00", "", "", "", "8"],
    [7, 105, 4, 2, "", "Complete", "2025-07-08 03:00:00", "", "", "", "12.35"],
]
LINES = [
    ["ORD123", "CUST001", "2025-07-06", "Electronics", "PROD001", 2, "199.99", "false"],
    ["ORD124", "CUST002", "2025-07-06", "Books", "PROD002", 1, "29.99", "true"],
    ["ORD124", "CUST002", "2025-07-06", "Electronics", "PROD003", 3, "0.15", "false"],
    ["ORD125", "CUST001", "2025-07-09", "Books", "PROD002", 1, "5.05", "FALSE"],
]


def three_table_batch(lake: Lake, batch_id: str, orders=ORDERS, items=ITEMS, products=PRODUCTS) -> BatchInput:  # type: ignore[no-untyped-def]
    paths: dict[str, list[str]] = {}
    if orders:
        paths["orders_paths"] = [lake.csv(f"{batch_id}/orders.csv", ORDERS_H, orders)]
    if items:
        paths["order_items_paths"] = [lake.csv(f"{batch_id}/order_items.csv", ITEMS_H, items)]
    if products:
        paths["products_paths"] = [lake.csv(f"{batch_id}/products.csv", PRODUCTS_H, products)]
    return lake.batch(batch_id, **paths)


# ----------------------------------------------------------------------------- expected KPIs in plain Python


def python_lines(orders=(), items=(), products=(), flat=()) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """kpi_python.python_lines over the positional test rows above."""
    return kpi_python.python_lines(
        [dict(zip(ORDERS_H, o, strict=True)) for o in orders],
        [dict(zip(ITEMS_H, i, strict=True)) for i in items],
        [dict(zip(PRODUCTS_H, p, strict=True)) for p in products],
        [dict(zip(LINES_H, line, strict=True)) for line in flat],
    )


# ----------------------------------------------------------------------------- validation


def test_valid_three_table_batch_lands_in_validated_delta(lake: Lake) -> None:
    batch = three_table_batch(lake, "20250708T100000Z-a")
    result = lake.validate(batch)

    assert result.status == "passed", result.errors
    assert result.shape == "tables"
    assert {name: (t.input_rows, t.valid_rows, t.quarantined_rows) for name, t in result.tables.items()} == {
        "orders": (5, 5, 0),
        "order_items": (7, 7, 0),
        "products": (2, 2, 0),
    }
    orders = {r["order_id"]: r for r in lake.table("validated", "orders")}
    assert set(orders) == {101, 102, 103, 104, 105}
    assert orders[102]["created_at"].isoformat().startswith("2025-07-06T23:30:00")
    assert orders[105]["created_at"].isoformat().startswith("2025-07-08T03:00:00")  # -05:00 -> UTC
    assert orders[101]["gender"] == "M" and orders[105]["gender"] is None
    assert {r["batch_id"] for r in orders.values()} == {batch.batch_id}
    assert {str(r["processing_date"]) for r in orders.values()} == {"2025-07-08"}
    assert orders[101]["source_file"] == batch.orders_paths[0]
    items = {r["id"]: r for r in lake.table("validated", "order_items")}
    assert items[2]["sale_price"] == pytest.approx(10.05)
    assert lake.table("quarantine", "orders") == []
    # The result document is written next to the tables and equals the return value.
    document = json.loads((lake.root / "warehouse" / "validation_output" / f"{batch.batch_id}.json").read_text())
    assert document == json.loads(result.model_dump_json())


def test_flat_batch_with_reordered_columns(lake: Lake) -> None:
    header = list(reversed(LINES_H))
    rows = [list(reversed(r)) for r in LINES]
    batch = lake.batch("20250708T100000Z-f", order_lines_paths=[lake.csv("flat.csv", header, rows)])
    result = lake.validate(batch)

    assert result.status == "passed" and result.shape == "order_lines"
    table = result.tables["order_lines"]
    assert (table.input_rows, table.valid_rows, table.quarantined_rows) == (4, 4, 0)
    stored = {(r["order_id"], r["product_id"]): r for r in lake.table("validated", "order_lines")}
    assert stored[("ORD123", "PROD001")]["quantity"] == 2
    assert stored[("ORD124", "PROD002")]["returned"] is True
    assert stored[("ORD125", "PROD002")]["returned"] is False
    assert str(stored[("ORD125", "PROD002")]["order_date"]) == "2025-07-09"


def test_a_file_with_an_extra_column_is_rejected_and_the_rest_of_the_batch_goes_on(lake: Lake) -> None:
    extra = lake.csv("flat_extra.csv", [*LINES_H, "note"], [[*r, "x"] for r in LINES])
    good = lake.csv("flat_good.csv", LINES_H, LINES)
    result = lake.validate(lake.batch("20250708T100000Z-x", order_lines_paths=[extra, good]))

    assert result.status == "passed"
    assert result.rejected_files == {extra: "header has unexpected column(s) note"}
    table = result.tables["order_lines"]
    assert (table.files, table.rejected_files, table.valid_rows) == (1, 1, len(LINES))
    assert {r["source_file"] for r in lake.table("validated", "order_lines")} == {good}
    registry = {r["source_file"]: r for r in lake.table("file_registry")}
    assert registry[extra]["status"] == "rejected" and registry[good]["valid_rows"] == len(LINES)


def test_every_invalid_row_kind_gets_its_specific_reason(lake: Lake) -> None:
    orders = [
        [1, "", "Complete", "M", "2025-07-06 10:00:00", "", "", "", 1],  # required missing
        [2, 1, "Complete", "M", "yesterday", "", "", "", 1],  # bad timestamp
        [3, 1, "Lost", "X", "2025-07-06 10:00:00", "", "", "", 0],  # allowed x2 + below min
        [4, 1, "Complete", "M", "2025-07-06 10:00:00", "", "", "", 1],  # duplicate key
        [4, 1, "Complete", "M", "2025-07-06 10:00:00", "", "", "", 1],
        [4, 1, "Complete", "M", "2025-07-06 10:00:00", "", "", "", 1],
        [5, 1, "Complete", "M", "2025-07-06 10:00:00", "", "", "", "1.5"],  # not an int
        [6, 1, "Complete", "M", "2025-07-06 10:00:00", "", "", "", 1],  # valid
    ]
    orders_uri = lake.csv("bad/orders.csv", ORDERS_H, orders)
    # A malformed row (too many fields) appended by hand.
    with Path(orders_uri.removeprefix("file://")).open("a") as fh:
        fh.write("7,1,Complete,M,2025-07-06 10:00:00,,,,1,surplus\n")
    items = [
        [10, 6, 1, 1, "", "Complete", "2025-07-06 10:00:00", "", "", "", "5"],  # valid
        [11, 999, 1, 1, "", "Complete", "2025-07-06 10:00:00", "", "", "", "5"],  # no such order
        [12, 6, 1, 42, "", "Complete", "2025-07-06 10:00:00", "", "", "", "5"],  # no such product
        [13, 1, 1, 1, "", "Complete", "2025-07-06 10:00:00", "", "", "", "5"],  # order 1 was quarantined
        [14, 6, 1, 1, "", "Complete", "2025-07-06 10:00:00", "", "", "", "100000.5"],  # above max
        [15, 6, 1, 1, "", "Complete", "2025-07-06", "", "", "", "5"],  # timestamp without a time
    ]
    flat = [
        ["bad id!", "C1", "2025-07-06", "Books", "P1", 1, "1", "true"],  # pattern
        ["O2", "C1", "2025-7-6", "Books", "P1", 1, "1", "yes"],  # date + boolean
        ["O3", "C1", "2025-07-06", "Books", "P1", 1, "NaN", "true"],  # not a double
    ]
    batch = lake.batch(
        "20250708T100000Z-bad",
        orders_paths=[orders_uri],
        order_items_paths=[lake.csv("bad/items.csv", ITEMS_H, items)],
        products_paths=[lake.csv("bad/products.csv", PRODUCTS_H, PRODUCTS)],
        order_lines_paths=[lake.csv("bad/flat.csv", LINES_H, flat)],
    )
    result = lake.validate(batch)
    assert result.status == "passed" and result.shape == "mixed"

    reasons = {str(r["order_id"]): r["reasons"] for r in lake.table("quarantine", "orders") if r["order_id"] != "4"}
    assert reasons["1"] == ["user_id: required value missing"]
    assert reasons["2"] == ["created_at: not a valid timestamp: 'yesterday' (expected YYYY-MM-DD HH:MM[:SS])"]
    assert sorted(reasons["3"]) == sorted(
        [
            "status: value not allowed: 'Lost' (allowed: Processing, Shipped, Complete, Cancelled, Returned)",
            "gender: value not allowed: 'X' (allowed: M, F)",
            "num_of_item: below minimum 1: '0'",
        ]
    )
    assert reasons["5"] == ["num_of_item: not a valid int: '1.5'"]
    assert reasons["7"] == ["malformed row: field count differs from the header's 9"]
    duplicates = [r for r in lake.table("quarantine", "orders") if r["order_id"] == "4"]
    assert [r["reasons"] for r in duplicates] == [["order_id: duplicate key (3 rows in batch)"]] * 3
    malformed = next(r for r in lake.table("quarantine", "orders") if r["order_id"] == "7")
    assert malformed["raw_record"].endswith("surplus") and malformed["reason"].startswith("malformed row")
    assert (malformed["line_number"], malformed["record_number"]) == (10, 9)
    assert malformed["errors"] == [{"rule": "malformed", "column": None, "value": None}]
    lines = {str(r["order_id"]): r["line_number"] for r in lake.table("quarantine", "orders") if r["order_id"] != "4"}
    assert lines == {"1": 2, "2": 3, "3": 4, "5": 8, "7": 10}
    assert [r["order_id"] for r in lake.table("validated", "orders")] == [6]

    item_reasons = {r["id"]: r["reasons"] for r in lake.table("quarantine", "order_items")}
    assert item_reasons == {
        "11": ["order_id: no such orders: '999'"],
        "12": ["product_id: no such products: '42'"],
        "13": ["order_id: no such orders: '1'"],
        "14": ["sale_price: above maximum 100000: '100000.5'"],
        "15": ["created_at: not a valid timestamp: '2025-07-06' (expected YYYY-MM-DD HH:MM[:SS])"],
    }
    flat_reasons = {r["order_id"]: r["reasons"] for r in lake.table("quarantine", "order_lines")}
    assert flat_reasons["bad id!"] == ["order_id: does not match pattern ^[A-Za-z0-9_-]{1,64}$: 'bad id!'"]
    assert sorted(flat_reasons["O2"]) == [
        "order_date: not a valid date: '2025-7-6' (expected YYYY-MM-DD)",
        "returned: not a valid boolean: 'yes'",
    ]
    assert flat_reasons["O3"] == ["unit_price: not a valid double: 'NaN'"]

    histogram = result.tables["orders"].reasons
    assert histogram["order_id: duplicate key"] == 3
    assert histogram["malformed row"] == 1
    assert histogram["num_of_item: below minimum 1"] == 1
    assert result.tables["orders"].quarantined_rows == 8 and result.tables["orders"].valid_rows == 1
    assert result.tables["order_items"].reasons["order_id: no such orders"] == 2


def test_broken_files_are_rejected_one_by_one_with_their_reason(lake: Lake) -> None:
    missing_columns = lake.csv("s/orders.csv", ORDERS_H[:-2], [])
    empty = lake.text("s/empty.csv", "")
    gone = lake.root.joinpath("raw/s/nope.csv").as_uri()
    products = lake.csv("s/products.csv", PRODUCTS_H, PRODUCTS)
    batch = lake.batch(
        "20250708T100000Z-broken", orders_paths=[missing_columns], order_items_paths=[empty], products_paths=[gone, products]
    )
    result = lake.validate(batch)

    assert result.status == "passed"
    assert result.rejected_files == {
        missing_columns: "header is missing column(s) delivered_at, num_of_item",
        empty: "file is empty (0 bytes)",
        gone: "deleted before its batch read it",
    }
    assert len(lake.table("validated", "products")) == len(PRODUCTS)
    assert not lake.has_table("validated", "orders")
    assert json.loads(Path(result.result_uri.removeprefix("file://")).read_text())["files"][0]["status"] == "rejected"


def test_a_batch_over_the_quarantine_threshold_fails_and_writes_nothing(lake: Lake) -> None:
    rows = [["O1", "C1", "2025-07-06", "Books", "P1", 1, "1", "true"]] + [
        [f"O{i}", "C1", "07/06/2025", "Books", "P1", 1, "1", "true"] for i in range(2, 5)
    ]
    batch = lake.batch("20250708T100000Z-t", order_lines_paths=[lake.csv("mostly_bad.csv", LINES_H, rows)])
    strict = Lake(lake.root, lake.spark, lake.settings.model_copy(update={"max_quarantined_share": 0.5}))
    result = strict.validate(batch)

    assert result.status == "failed" and result.quarantined_share == 0.75
    assert result.errors == [
        "quarantined 3 of 4 rows (75%), above the limit of 50% (CARTFLOW_MAX_QUARANTINED_SHARE); nothing was written"
    ]
    assert result.archive == [] and result.processing_dates == []
    assert not lake.has_table("validated", "order_lines") and not lake.has_table("quarantine", "order_lines")


def test_line_numbers_hold_across_file_splits_blank_lines_and_multiline_fields(lake: Lake) -> None:
    rows = [[f"O{i}", "C1", "2025-07-06", "Books", "P1", 1, "1", "true"] for i in range(3000)]
    for i in (5, 1500, 2999):
        rows[i][5] = 0  # quantity below minimum
    big = lake.csv("big.csv", LINES_H, rows)
    text = (
        "order_id,customer_id,order_date,category,product_id,quantity,unit_price,returned\n"
        'M1,C1,2025-07-06,Books,"P\n1",1,1,true\n'  # lines 2-3: a quoted line break (bad id)
        "\n"  # line 4: blank
        "M2,C1,2025-07-06,Books,P2,0,1,true\n"  # line 5: bad
    )
    odd = lake.text("odd.csv", text)
    previous = lake.spark.conf.get("spark.sql.files.maxPartitionBytes")
    lake.spark.conf.set("spark.sql.files.maxPartitionBytes", "16k")  # ~10 splits for big.csv
    try:
        result = lake.validate(lake.batch("20250708T100000Z-l", order_lines_paths=[big, odd]))
    finally:
        lake.spark.conf.set("spark.sql.files.maxPartitionBytes", previous)
    assert result.tables["order_lines"].quarantined_rows == 5
    lines = sorted((r["source_file"].rsplit("/", 1)[-1], r["line_number"]) for r in lake.table("quarantine", "order_lines"))
    assert lines == [("big.csv", 7), ("big.csv", 1502), ("big.csv", 3001), ("odd.csv", 2), ("odd.csv", 5)]


def test_references_resolve_against_previously_validated_batches(lake: Lake) -> None:
    first = three_table_batch(lake, "20250708T100000Z-1", items=[])
    assert lake.validate(first).status == "passed"

    second = three_table_batch(lake, "20250708T110000Z-2", orders=[], products=[])
    result = lake.validate(second)

    assert result.tables["order_items"].valid_rows == len(ITEMS)
    assert result.tables["order_items"].quarantined_rows == 0


def test_replaying_a_batch_replaces_its_rows(lake: Lake) -> None:
    batch = three_table_batch(lake, "20250708T100000Z-r")
    other = lake.batch(
        "20250708T120000Z-other", order_lines_paths=[lake.csv("other.csv", LINES_H, [*LINES[:1], ["x y", *LINES[1][1:]]])]
    )
    lake.validate(batch)
    lake.validate(other)
    first_counts = (len(lake.table("validated", "orders")), len(lake.table("validated", "order_items")))

    replay = lake.validate(batch)

    assert replay.tables["orders"].valid_rows == len(ORDERS)
    assert (len(lake.table("validated", "orders")), len(lake.table("validated", "order_items"))) == first_counts
    assert len(lake.table("validated", "order_lines")) == 1 and len(lake.table("quarantine", "order_lines")) == 1


# ----------------------------------------------------------------------------- transformation


def test_kpis_match_a_plain_python_computation(lake: Lake) -> None:
    tables = three_table_batch(lake, "20250708T100000Z-t")
    flat = lake.batch("20250708T110000Z-f", order_lines_paths=[lake.csv("flat.csv", LINES_H, LINES)])
    sink = RecordingSink()

    lake.validate(tables)
    first = lake.transform(tables, sink)
    lake.validate(flat)
    second = lake.transform(flat, sink)

    three_table = python_lines(ORDERS, ITEMS, PRODUCTS)
    everything = python_lines(ORDERS, ITEMS, PRODUCTS, LINES)
    assert first.order_dates == ["2025-07-06", "2025-07-07", "2025-07-08"]
    assert order_kpis_by_date(sink.writes[0]) == python_order_kpis(three_table)
    assert category_kpis_by_key(sink.writes[0]) == python_category_kpis(three_table)
    # The flat batch touches 07-06 (shared with the three-table orders) and 07-09 only.
    assert second.order_dates == ["2025-07-06", "2025-07-09"]
    expected = python_order_kpis(everything)
    assert order_kpis_by_date(sink.writes[1]) == {d: expected[d] for d in second.order_dates}
    expected_categories = python_category_kpis(everything)
    assert category_kpis_by_key(sink.writes[1]) == {k: v for k, v in expected_categories.items() if k[1] in second.order_dates}
    # Sanity of the hand-made data: namespacing keeps flat ORD124 and t:... apart, rounding is half-up.
    assert expected["2025-07-06"]["total_orders"] == 4
    assert all(isinstance(v, Decimal) for r in sink.writes[1].order_rows for k, v in r.items() if k != "order_date")

    delta_orders = {str(r["order_date"]): r for r in lake.table("kpis", "order_kpis")}
    assert delta_orders["2025-07-07"]["updated_by_batch"] == tables.batch_id  # untouched by the flat batch
    assert delta_orders["2025-07-06"]["updated_by_batch"] == flat.batch_id
    assert delta_orders["2025-07-06"]["total_revenue"] == expected["2025-07-06"]["total_revenue"]


def test_replay_is_identical_and_a_later_batch_corrects_its_date(lake: Lake) -> None:
    first = three_table_batch(lake, "20250708T100000Z-a")
    lake.validate(first)
    sink = RecordingSink()
    lake.transform(first, sink)
    lake.transform(first, sink)
    assert sink.writes[0] == sink.writes[1]
    delta_before = sorted(lake.table("kpis", "category_kpis"), key=lambda r: (r["category"], str(r["order_date"])))

    # Order 104 (2025-07-07) becomes Returned; item 5 moves to product 2 whose category changes.
    orders_v2 = [[104, 3, "Returned", "F", "2025-07-07 01:00:00", "", "", "", 2]]
    products_v2 = [[2, "3", "Shirts", "T1", "Acme", "10", "Women", "s2", 1]]
    second = three_table_batch(lake, "20250708T120000Z-b", orders=orders_v2, items=[], products=products_v2)
    assert lake.validate(second).status == "passed"
    result = lake.transform(second, sink)

    # Product 2 is sold on 07-06 and 07-08 (item 6 on 07-07 is cancelled but still touches it).
    assert result.order_dates == ["2025-07-06", "2025-07-07", "2025-07-08"]
    current_orders = [o for o in ORDERS if o[0] != 104] + orders_v2
    expected_lines = python_lines(current_orders, ITEMS, products_v2 + PRODUCTS[:1])
    assert order_kpis_by_date(sink.writes[2]) == python_order_kpis(expected_lines)
    assert category_kpis_by_key(sink.writes[2]) == python_category_kpis(expected_lines)
    assert order_kpis_by_date(sink.writes[2])["2025-07-07"]["return_rate"] == Decimal("1.0000")
    # The Tops rows are gone from the Delta copy, replaced by Shirts.
    categories = {(r["category"], str(r["order_date"])) for r in lake.table("kpis", "category_kpis")}
    assert ("Tops", "2025-07-06") not in categories and ("Shirts", "2025-07-06") in categories
    assert len(delta_before) == 4


def test_untouched_dates_are_not_rewritten(lake: Lake) -> None:
    first = three_table_batch(lake, "20250708T100000Z-a")
    lake.validate(first)
    lake.transform(first)
    late_item = [[8, 101, 1, 1, "", "Complete", "2025-07-06 10:00:00", "", "", "", "1.00"]]
    second = three_table_batch(lake, "20250708T130000Z-b", orders=[], items=late_item, products=[])
    lake.validate(second)
    sink = RecordingSink()

    result = lake.transform(second, sink)

    assert result.order_dates == ["2025-07-06"]
    assert [r["order_date"] for r in sink.writes[0].order_rows] == ["2025-07-06"]
    by_date = {str(r["order_date"]): r["updated_by_batch"] for r in lake.table("kpis", "order_kpis")}
    assert by_date == {"2025-07-06": second.batch_id, "2025-07-07": first.batch_id, "2025-07-08": first.batch_id}


# ----------------------------------------------------------------------------- DynamoDB sink (MiniStack)


@pytest.fixture()
def dynamo_settings(monkeypatch: pytest.MonkeyPatch, emulator: str) -> Settings:
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        aws_endpoint_url=emulator,
        category_kpis_table=f"CategoryKPIs-{suffix}",
        order_kpis_table=f"OrderKPIs-{suffix}",
    )
    from cartflow.core.aws import AwsClients

    ddb = AwsClients(settings).dynamodb
    ddb.create_table(
        TableName=settings.category_kpis_table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "category", "AttributeType": "S"},
            {"AttributeName": "order_date", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "category", "KeyType": "HASH"}, {"AttributeName": "order_date", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_order_date",
                "KeySchema": [
                    {"AttributeName": "order_date", "KeyType": "HASH"},
                    {"AttributeName": "category", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
    )
    ddb.create_table(
        TableName=settings.order_kpis_table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "order_date", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "order_date", "KeyType": "HASH"}],
    )
    return settings


def test_dynamodb_sink_puts_full_items_and_deletes_vanished_categories(lake: Lake, dynamo_settings: Settings) -> None:
    from cartflow.core.aws import AwsClients

    lake.settings = dynamo_settings
    sink = DynamoKpiSink(dynamo_settings)
    first = three_table_batch(lake, "20250708T100000Z-a")
    lake.validate(first)
    lake.transform(first, sink)
    resource = AwsClients(dynamo_settings).ddb_resource
    orders_table = resource.Table(dynamo_settings.order_kpis_table)
    categories_table = resource.Table(dynamo_settings.category_kpis_table)

    expected = python_order_kpis(python_lines(ORDERS, ITEMS, PRODUCTS))
    item = orders_table.get_item(Key={"order_date": "2025-07-06"})["Item"]
    assert item == {"order_date": "2025-07-06", **expected["2025-07-06"], "updated_by_batch": first.batch_id}
    assert {i["category"] for i in categories_table.scan()["Items"] if i["order_date"] == "2025-07-06"} == {"Jeans", "Tops"}

    # Product 2 changes category: Tops rows of its dates must disappear, Shirts appear.
    products_v2 = [[2, "3", "Shirts", "T1", "Acme", "10", "Women", "s2", 1]]
    second = three_table_batch(lake, "20250708T120000Z-b", orders=[], items=[], products=products_v2)
    lake.validate(second)
    lake.transform(second, sink)

    rows = {(i["category"], i["order_date"]): i for i in categories_table.scan()["Items"]}
    assert not any(category == "Tops" for category, _ in rows)
    assert rows[("Shirts", "2025-07-06")]["updated_by_batch"] == second.batch_id
    assert rows[("Jeans", "2025-07-06")]["updated_by_batch"] == second.batch_id
    # 07-07 is touched too (through a cancelled Tops item) and keeps only its Jeans row.
    assert [c for c, d in rows if d == "2025-07-07"] == ["Jeans"]
    assert rows[("Jeans", "2025-07-07")]["updated_by_batch"] == second.batch_id


# ----------------------------------------------------------------------------- exported files on S3A (MiniStack)


def _s3a_through(spark: SparkSession, endpoint: str, bucket: str) -> None:
    """Point S3A at the emulator for ``bucket`` only (per-bucket keys on the live Hadoop conf)."""
    conf = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
    for key, value in {
        "endpoint": endpoint,
        "endpoint.region": "us-east-1",
        "path.style.access": "true",
        "connection.ssl.enabled": "false",
        "access.key": "test",
        "secret.key": "test",
        "aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
    }.items():
        conf.set(f"fs.s3a.bucket.{bucket}.{key}", value)


def test_exported_files_with_spaces_unicode_bom_gzip_and_utc_are_read_from_s3a(
    lake: Lake, emulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys as people save them, through the S3 notification (URL-encoded), ingest's key rules and S3A."""
    import gzip
    from urllib.parse import quote_plus

    from cartflow.core.aws import AwsClients
    from cartflow.core.models import RawFile
    from services.ingest import parse_s3_notification

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"exports-{uuid.uuid4().hex[:8]}"
    settings = Settings(aws_endpoint_url=emulator, region="us-east-1", bucket=bucket, max_quarantined_share=1.0)
    s3 = AwsClients(settings).s3
    s3.create_bucket(Bucket=bucket)
    _s3a_through(lake.spark, emulator, bucket)
    header = ",".join(ORDERS_H)
    objects = {
        # Excel "CSV UTF-8": BOM + CRLF; BigQuery timestamps with " UTC".
        "raw/orders/2025 08 01 export (1).csv": b"\xef\xbb\xbf"
        + "\r\n".join(
            [
                header,
                "201,1,Complete,F,2025-08-01 10:00:00 UTC,,2025-08-01 18:30:00 UTC,,1",
                "202,2,Shipped,M,2025-08-01 23:30:00-05,,,,2",
                "",
            ]
        ).encode(),
        "raw/orders/ünïcode.csv": "\n".join(
            [header, "203,3,Complete,F,2025-08-02 08:00:00+0200,,,,1", "204,3,Complete,F,2025-08-02 08:00:00 CET,,,,1", ""]
        ).encode(),
        "raw/order_lines/export (2).csv.gz": gzip.compress(
            b"\xef\xbb\xbf" + ("\n".join([",".join(LINES_H), *(",".join(map(str, r)) for r in LINES), ""])).encode(), mtime=0
        ),
    }
    files = []
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        record = {
            "eventName": "ObjectCreated:Put",
            "eventTime": "2025-08-02T10:00:00Z",
            "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key, safe="/"), "size": len(body), "sequencer": "1"}},
        }
        [created] = parse_s3_notification(json.dumps({"Records": [record]}))
        assert created.key == key  # S3 sends "2025+08+01+export+%281%29.csv"; ingest decodes it
        files.append(RawFile.parse(bucket, created.key))
    batch = BatchInput.from_files(
        batch_id="20250802T100000Z-s3a", group_key="g", bucket=bucket, processing_date="2025-08-02", files=files, staged=False
    )
    assert batch.orders_paths == [f"s3://{bucket}/raw/orders/2025 08 01 export (1).csv", f"s3://{bucket}/raw/orders/ünïcode.csv"]

    result = run_validation(lake.spark, settings, batch, lake.warehouse)

    assert result.status == "passed", result.errors
    assert [(f.uri, f.status, f.reason) for f in result.files] == [
        (uri, "accepted", None) for uri in [*batch.orders_paths, *batch.order_lines_paths]
    ]
    orders = {r["order_id"]: r for r in lake.table("validated", "orders")}
    assert set(orders) == {201, 202, 203}

    def utc(ts: datetime) -> str:  # delta-rs returns UTC instants, with or without tzinfo
        return (ts if ts.tzinfo is None else ts.astimezone(UTC).replace(tzinfo=None)).isoformat()

    assert [utc(orders[i]["created_at"]) for i in (201, 202, 203)] == [
        "2025-08-01T10:00:00",
        "2025-08-02T04:30:00",
        "2025-08-02T06:00:00",
    ]
    assert utc(orders[201]["shipped_at"]) == "2025-08-01T18:30:00" and orders[201]["source_file"] == batch.orders_paths[0]
    [bad] = lake.table("quarantine", "orders")
    assert (bad["source_file"], bad["line_number"]) == (batch.orders_paths[1], 3)
    assert bad["reasons"][0].startswith("created_at: not a valid timestamp: '2025-08-02 08:00:00 CET' (the only time zone")
    lines = {(r["order_id"], r["product_id"]): r for r in lake.table("validated", "order_lines")}
    assert len(lines) == len(LINES) and lines[("ORD123", "PROD001")]["quantity"] == 2
    assert {r["source_file"] for r in lines.values()} == set(batch.order_lines_paths)


# ----------------------------------------------------------------------------- CLI


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "--batch", "{not json"], "not JSON"),
        (["validate", "--batch", '{"batch_id": "x"}'], "not a valid BatchInput"),
        (["transform", "--batch-file", "/nonexistent/batch.json"], "cannot read --batch-file"),
        (["compact", "--batch", "{}"], "invalid choice"),
        (["validate"], "one of the arguments --batch --batch-file is required"),
    ],
)
def test_cli_rejects_bad_input_with_exit_2(args: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "spark.jobs", *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
