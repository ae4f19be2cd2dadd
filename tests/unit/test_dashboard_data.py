"""The dashboard's view model (cartflow.dashboard.data) and its rendering, without AWS.

The integration test (tests/integration/test_dashboard.py) checks the same page against the
oracle in a real browser; here the building blocks are checked on hand-made items.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from datetime import date
from decimal import Decimal
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

import pytest

from cartflow.dashboard import data as dd
from cartflow.dashboard.render import page, sections
from cartflow.dashboard.server import DashboardServer
from cartflow.ops.views import FileState

MS = 1_750_000_000_000  # a fixed creation time (ms)


def chunk_item(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "group_key": "2025-07-06",
        "batch_id": f"b-{status}",
        "status": status,
        "created_at": Decimal(MS),
        "file_paths": ["s3://bkt/raw/orders/a.csv", "s3://bkt/raw/orders/b.csv"],
        **extra,
    }


def outcomes(*items: dict[str, Any]) -> str:
    return json.dumps([{"dataset": "orders", "status": "accepted", **i} for i in items])


# ----------------------------------------------------------------------------- rows


def test_dynamodb_items_and_delta_rows_make_the_same_rows() -> None:
    ddb = [
        {
            "order_date": "2025-07-07",
            "total_orders": Decimal(2),
            "total_revenue": Decimal("10.50"),
            "total_items_sold": Decimal(3),
        }
        | {"return_rate": Decimal("0.5000"), "unique_customers": Decimal(2), "updated_by_batch": "b1"},
        {"order_date": "2025-07-06", "total_orders": Decimal(1), "total_revenue": Decimal("1.00"), "total_items_sold": Decimal(1)}
        | {"return_rate": Decimal("0.0000"), "unique_customers": Decimal(1), "updated_by_batch": "b1"},
    ]
    delta = [{**r, "order_date": date.fromisoformat(r["order_date"]), "total_orders": int(r["total_orders"])} for r in ddb]
    rows = dd.order_rows(ddb)
    assert [r.order_date for r in rows] == ["2025-07-06", "2025-07-07"]  # sorted by date
    assert rows == dd.order_rows(delta)
    assert rows[1].total_revenue == Decimal("10.50") and isinstance(rows[1].total_orders, int)

    cats = dd.category_rows(
        [
            {"category": "Toys", "order_date": date(2025, 7, 6), "daily_revenue": Decimal("5.00")}
            | {"avg_order_value": Decimal("5.00"), "avg_return_rate": Decimal("0")},
            {"category": "Books", "order_date": "2025-07-06", "daily_revenue": 7.5, "avg_order_value": 7.5, "avg_return_rate": 1},
        ]
    )
    assert [(c.category, c.order_date) for c in cats] == [("Books", "2025-07-06"), ("Toys", "2025-07-06")]
    assert cats[0].daily_revenue == Decimal("7.5")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal(MS), MS / 1000),
        (MS, MS / 1000),
        ("2025-07-06T10:00:00Z", 1751796000.0),
        ("2025-07-06T10:00:00.500+00:00", 1751796000.5),
        ("2025-07-06T10:00:00", 1751796000.0),  # naive: UTC
        (None, None),
        ("", None),
        ("yesterday", None),
    ],
)
def test_chunk_timestamps_in_either_writer_format(value: Any, expected: float | None) -> None:
    assert dd.epoch_seconds(value) == expected


def test_a_done_batch_has_its_duration_share_and_rejected_files() -> None:
    item = chunk_item(
        "done",
        processing_started_at=Decimal(MS + 10_000),
        finished_at="2025-06-15T15:07:00Z",  # the state machine's EnteredTime
        file_outcomes=outcomes(
            {"uri": "s3://bkt/raw/orders/a.csv", "rows": 8, "valid_rows": 6, "quarantined_rows": 2},
            {"uri": "s3://bkt/raw/orders/b.csv", "status": "rejected", "reason": "empty file"},
        ),
    )
    row = dd.batch_row(item, now=0.0, result=None)
    finished = dd.epoch_seconds("2025-06-15T15:07:00Z")
    assert finished is not None
    assert (row.status, row.files, row.rejected_files) == ("done", 2, 1)
    assert row.started_at == MS / 1000 + 10
    assert row.duration_seconds == pytest.approx(finished - (MS / 1000 + 10))
    assert row.quarantined_share == 0.25


def test_the_validation_result_is_the_share_when_there_is_one() -> None:
    from cartflow.core.models import FileOutcome, ValidationResult

    result = ValidationResult(
        batch_id="b-failed",
        processing_date="2025-07-06",
        status="failed",
        shape="tables",
        quarantined_share=0.9,
        files=[FileOutcome(uri="s3://bkt/raw/orders/a.csv", dataset="orders", status="rejected", reason="bad header")],
    )
    item = chunk_item("failed", finished_at=Decimal(MS + 5_000), error="quarantined 9 of 10 rows")
    row = dd.batch_row(item, now=0.0, result=result)
    assert (row.quarantined_share, row.rejected_files, row.error) == (0.9, 1, "quarantined 9 of 10 rows")
    assert row.duration_seconds == pytest.approx(5.0)  # never started processing: from creation


def test_in_flight_and_pending_durations() -> None:
    running = dd.batch_row(chunk_item("processing", processing_started_at=Decimal(MS)), now=MS / 1000 + 42, result=None)
    assert running.duration_seconds == pytest.approx(42.0) and running.finished_at is None
    pending = dd.batch_row(chunk_item("pending"), now=MS / 1000 + 42, result=None)
    assert pending.duration_seconds is None and pending.quarantined_share is None


def test_file_rows_carry_state_reason_and_quarantine_rules() -> None:
    states = [
        FileState("s3://bkt/raw/orders/b.csv", "g", "archived", "b1", None, 2, 20.0),
        FileState("s3://bkt/raw/orders/semi.csv", "g", "rejected", "b1", "wrong delimiter", None, 10.0),
        FileState("s3://bkt/raw/unknown/x.csv", "g", "rejected", None, "unknown data type 'unknown'", None, None),
    ]
    reasons = dd.quarantine_reasons(
        [
            {"source_file": "s3a://bkt/raw/orders/b.csv", "reason": "price: out of range (-1)"},
            {"source_file": "s3a://bkt/raw/orders/b.csv", "reason": "price: out of range (-2)"},
            {"source_file": "s3a://bkt/raw/orders/b.csv", "reason": "user_id: required"},
            {"source_file": None, "reason": "ignored"},
        ]
    )
    assert reasons == {"s3://bkt/raw/orders/b.csv": {"price": 2, "user_id": 1}}
    rows = dd.file_rows(states, reasons)
    assert [r.key for r in rows] == ["raw/unknown/x.csv", "raw/orders/semi.csv", "raw/orders/b.csv"]  # by arrival
    by_key = {r.key: r for r in rows}
    assert by_key["raw/orders/b.csv"].quarantine_reasons == {"price": 2, "user_id": 1}
    assert by_key["raw/orders/b.csv"].dataset == "orders"
    assert by_key["raw/orders/semi.csv"].reason == "wrong delimiter"


def test_delta_and_dynamodb_comparison_names_every_difference() -> None:
    o = dd.OrderRow("2025-07-06", 1, Decimal("1.00"), 1, Decimal("0"), 1)
    c = dd.CategoryRow("Toys", "2025-07-06", Decimal("1.00"), Decimal("1.00"), Decimal("0"))
    assert dd.compare_kpis([o], [c], [o], [c]) == []
    cheaper = dd.CategoryRow("Toys", "2025-07-06", Decimal("0.99"), Decimal("1.00"), Decimal("0"))
    assert dd.compare_kpis([], [c], [], [cheaper]) == ["CategoryKPIs Toys 2025-07-06 daily_revenue: DynamoDB 1.00 != Delta 0.99"]
    assert dd.compare_kpis([], [], [o], []) == ["OrderKPIs 2025-07-06: in Delta only"]
    other = dd.OrderRow("2025-07-06", 1, Decimal("2.00"), 1, Decimal("0"), 1)
    diff = dd.compare_kpis([o], [c], [other], [])
    assert diff == [
        "OrderKPIs 2025-07-06 total_revenue: DynamoDB 1.00 != Delta 2.00",
        "CategoryKPIs Toys 2025-07-06: in DynamoDB only",
    ]
    # 1.0 and 1.00 are the same number
    same = dd.OrderRow("2025-07-06", 1, Decimal("1.0"), 1, Decimal("0.0000"), 1)
    assert dd.compare_kpis([o], [], [same], []) == []


# ----------------------------------------------------------------------------- builder (faked reads)


def fake_views(monkeypatch: pytest.MonkeyPatch, items: list[dict[str, Any]], fail: bool = False) -> list[str]:
    reads: list[str] = []

    def scan(deps: Any, table: str) -> list[dict[str, Any]]:
        reads.append(table)
        if fail:
            raise ConnectionError("Could not connect to the endpoint URL")
        return [*items, {"group_key": "#lock", "batch_id": "#inflight", "holder": "x"}]

    def validation_result(deps: Any, batch_id: str) -> None:
        reads.append(f"result:{batch_id}")

    monkeypatch.setattr(dd.views, "scan", scan)
    monkeypatch.setattr(dd.views, "validation_result", validation_result)
    monkeypatch.setattr(dd.views, "order_kpis", lambda deps: [])
    monkeypatch.setattr(
        dd.views,
        "category_kpis",
        lambda deps: [
            {"category": "A&B <x>", "order_date": "2025-07-06", "daily_revenue": Decimal("3.50")}
            | {"avg_order_value": Decimal("3.50"), "avg_return_rate": Decimal("0")}
        ],
    )
    monkeypatch.setattr(dd.views, "files", lambda deps, chunks: [])
    return reads


def fake_deps() -> Any:
    return SimpleNamespace(settings=SimpleNamespace(bucket="bkt", batch_chunks_table="chunks"), now=lambda: MS / 1000 + 60)


def test_build_skips_the_lock_and_reads_settled_results_once(monkeypatch: pytest.MonkeyPatch) -> None:
    reads = fake_views(monkeypatch, [chunk_item("done", finished_at=Decimal(MS + 1000)), chunk_item("processing")])
    data = dd.DashboardData(fake_deps(), use_delta=False)
    first = data.build()
    second = data.build()
    assert [b.batch_id for b in first.batches] == ["b-done", "b-processing"]
    assert first.error is None and second.batches == first.batches
    assert reads.count("result:b-done") == 1  # cached: a settled batch's result never changes
    assert "result:b-processing" not in reads  # in flight: nothing to read yet
    assert first.delta.available is False and "disabled" in first.delta.note
    payload = first.to_json()
    assert payload["category_kpis"][0]["daily_revenue"] == "3.50"  # exact, not a float
    assert payload["categories"] == ["A&B <x>"] and payload["dates"] == ["2025-07-06"]
    json.dumps(payload)  # plain JSON all the way down


def test_an_unreachable_pipeline_is_shown_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_views(monkeypatch, [], fail=True)
    view = dd.DashboardData(fake_deps(), use_delta=False).build()
    assert view.error is not None and "Could not connect" in view.error
    assert "Could not read the pipeline" in sections(view)


# ----------------------------------------------------------------------------- rendering + server


class _Marks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.marks: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "data-value" in a:
            self.marks.append({"tag": tag, **a})


def test_the_page_carries_every_value_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_views(monkeypatch, [chunk_item("done", finished_at=Decimal(MS + 1000))])
    view = dd.DashboardData(fake_deps(), use_delta=False).build()
    html = page(view, refresh_seconds=2)
    assert "<x>" not in html and "A&amp;B &lt;x&gt;" in html  # a category name cannot inject markup
    assert 'data-refresh-ms="2000"' in html and "/static/dashboard.js" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing from elsewhere
    parser = _Marks()
    parser.feed(html)
    bars = [m for m in parser.marks if m["tag"] == "rect"]
    cells = [m for m in parser.marks if m["tag"] == "td" and m.get("data-col") == "daily_revenue"]
    assert [(b["data-category"], b["data-date"], b["data-value"]) for b in bars] == [("A&B <x>", "2025-07-06", "3.50")]
    assert [c["data-value"] for c in cells] == ["3.50"]
    assert 'data-batch-id="b-done" data-status="done"' in html


def test_server_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_views(monkeypatch, [])
    server = DashboardServer(("127.0.0.1", 0), dd.DashboardData(fake_deps(), use_delta=False), refresh_seconds=5)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        base = server.url

        def get(path: str) -> tuple[int, str, str]:
            try:
                with urllib.request.urlopen(base + path.lstrip("/"), timeout=10) as r:
                    return r.status, r.headers["Content-Type"], r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.headers["Content-Type"], e.read().decode()

        assert get("/healthz")[:2] == (200, "text/plain; charset=utf-8")
        status, ctype, body = get("/")
        assert status == 200 and ctype.startswith("text/html") and "Daily revenue per category" in body
        status, ctype, body = get("/api/dashboard.json")
        assert status == 200 and json.loads(body)["bucket"] == "bkt"
        assert get("/api/sections")[0] == 200
        assert get("/static/dashboard.js")[1].startswith("text/javascript")
        assert get("/static/dashboard.css")[1].startswith("text/css")
        for bad in ("/static/../data.py", "/static/%2e%2e/data.py", "/static/data.py", "/static/.hidden.js", "/nope"):
            assert get(bad)[0] == 404, bad
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_without_deltalake_the_page_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """The services image has the main dependencies only: no deltalake, no crash."""
    import sys

    monkeypatch.setitem(sys.modules, "deltalake", None)  # `import deltalake` -> ImportError
    fake_views(monkeypatch, [])
    view = dd.DashboardData(fake_deps()).build()
    assert view.error is None and not view.delta.available
    assert "deltalake package is not installed" in view.delta.note
    assert 'data-available="false"' in sections(view)
