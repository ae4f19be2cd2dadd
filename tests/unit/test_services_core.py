"""Pure cores of the functions (no AWS): event items, debounce planning, dispatch input, stream filter."""

import json
from decimal import Decimal
from types import SimpleNamespace

from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent

from cartflow.core.batch_table import Chunk
from cartflow.core.config import Settings
from cartflow.core.deps import Deps
from services.debouncer import PendingEvent, plan_chunks, settle_replaced
from services.dispatch import batch_input
from services.ingest import S3ObjectCreated, event_item, parse_s3_notification
from services.stream_trigger import should_dispatch

NOW = 1_751_968_800.0  # 2025-07-08T10:00:00Z


def deps(**kw: object) -> Deps:
    return Deps(settings=Settings(debounce_seconds=30, **kw), clients=SimpleNamespace(), clock=lambda: NOW)  # type: ignore[arg-type]


def obj(key: str, bucket: str = "cartflow-data", t: float = NOW) -> S3ObjectCreated:
    return S3ObjectCreated(bucket=bucket, key=key, event_time=t, size=10, etag="e", sequencer="s")


def test_event_item_opens_a_debounce_window_without_ttl() -> None:
    item = event_item(obj("raw/orders/orders_part1.csv"), deps())
    assert item["group_key"] == "2025-07-08"
    assert item["data_type_part"] == "orders#orders_part1"
    assert item["debounce_deadline"] == item["arrival_timestamp"] + 30
    assert item["processed_flag"] is False and item["unbatched"] == "1"
    assert "expires_at" not in item  # never expire a file still waiting to be batched


def test_unknown_type_is_recorded_rejected_with_reason_and_expiry() -> None:
    item = event_item(obj("raw/customers/c.csv"), deps())
    assert item["status"] == "rejected"
    assert "unknown data type 'customers'" in item["reason"]
    assert "unbatched" not in item and item["expires_at"] > NOW


def test_foreign_bucket_is_rejected() -> None:
    item = event_item(obj("raw/orders/o.csv", bucket="other"), deps())
    assert item["status"] == "rejected" and "not the pipeline bucket" in item["reason"]


def test_parse_s3_notification_decodes_keys_and_skips_test_events() -> None:
    body = (
        '{"Records":[{"eventName":"ObjectCreated:Put","eventTime":"2025-07-08T10:00:00.000Z",'
        '"s3":{"bucket":{"name":"b"},"object":{"key":"raw/orders/a%3Db+c.csv","size":3,"eTag":"x","sequencer":"01"}}}]}'
    )
    [o] = parse_s3_notification(body)
    assert o.key == "raw/orders/a=b c.csv" and o.event_time == NOW
    assert parse_s3_notification('{"Event":"s3:TestEvent"}') == []


def ev(group: str, t: float, window: float = 30) -> PendingEvent:
    return PendingEvent(group, Decimal(str(t)), f"s3://b/raw/orders/{t}.csv", Decimal(str(t + window)))


def test_plan_waits_while_any_file_of_the_group_is_inside_the_window() -> None:
    events = [ev("g1", NOW - 100), ev("g1", NOW - 10), ev("g2", NOW - 100)]
    plan = plan_chunks(events, NOW, max_files=10)
    assert list(plan) == ["g2"]


def test_plan_caps_files_per_chunk_oldest_first() -> None:
    events = [ev("g", NOW - 100 + i) for i in range(5)][::-1]
    plan = plan_chunks(events, NOW, max_files=2)
    sizes = [len(c) for c in plan["g"]]
    assert sizes == [2, 2, 1]
    assert [e.arrival_timestamp for e in plan["g"][0]] == sorted(e.arrival_timestamp for e in events)[:2]


def test_dispatch_input_splits_file_paths() -> None:
    chunk = Chunk(
        "2025-07-08",
        "b1-2025-07-08-000",
        "pending",
        1,
        ["s3://b/raw/order_items/i.csv", "s3://b/raw/orders/o.csv", "s3://b/raw/products/p.csv"],
    )
    bi = batch_input(chunk, "2025-07-09")
    assert bi.orders_paths == ["s3://b/raw/orders/o.csv"]
    assert bi.order_items_paths == ["s3://b/raw/order_items/i.csv"]
    assert bi.products_paths == ["s3://b/raw/products/p.csv"]
    assert bi.bucket == "b" and bi.processing_date == "2025-07-09"


def stream(name: str, image: dict[str, dict[str, str]]) -> DynamoDBStreamEvent:
    return DynamoDBStreamEvent({"Records": [{"eventName": name, "dynamodb": {"NewImage": image}}]})


def test_stream_filter_wakes_on_new_pending_and_on_finished_batches_only() -> None:
    assert should_dispatch(stream("INSERT", {"group_key": {"S": "g"}, "status": {"S": "pending"}}))
    assert should_dispatch(stream("MODIFY", {"group_key": {"S": "g"}, "status": {"S": "done"}}))
    assert not should_dispatch(stream("MODIFY", {"group_key": {"S": "g"}, "status": {"S": "processing"}}))
    assert not should_dispatch(stream("MODIFY", {"group_key": {"S": "#lock"}, "holder": {"S": "x"}}))


# ------------------------------------------------------------------ several uploads of one key


def upload(path: str, t: float, seq: str, version: str | None = None, removal: bool = False) -> PendingEvent:
    return PendingEvent("2025-07-08", Decimal(str(t)), path, Decimal(str(t + 5)), seq, version, removal)


def test_a_later_upload_supersedes_and_a_later_delete_withdraws_waiting_uploads() -> None:
    a1 = upload("s3://b/raw/orders/a.csv", 1, "0A", "v1")
    a2 = upload("s3://b/raw/orders/a.csv", 2, "0B", "v2")
    b1 = upload("s3://b/raw/orders/b.csv", 1, "10", "w1")
    b_del = upload("s3://b/raw/orders/b.csv", 2, "11", removal=True)
    c1 = upload("s3://b/raw/orders/c.csv", 1, "05", "x1")
    # Sequencers are compared after right-padding ("0B" > "0A0"), not by arrival order.
    a3 = upload("s3://b/raw/orders/a.csv", 0.5, "0A0", "v0")
    settled = {
        (x.event.s3_path, x.event.version_id): (x.status.value, x.reason) for x in settle_replaced([a2, a1, b_del, b1, c1, a3])
    }
    assert set(settled) == {
        ("s3://b/raw/orders/a.csv", "v0"),
        ("s3://b/raw/orders/a.csv", "v1"),
        ("s3://b/raw/orders/b.csv", "w1"),
    }
    assert settled[("s3://b/raw/orders/a.csv", "v1")][0] == "superseded" and "v2" in settled[("s3://b/raw/orders/a.csv", "v1")][1]
    assert settled[("s3://b/raw/orders/a.csv", "v0")][0] == "superseded" and "v1" in settled[("s3://b/raw/orders/a.csv", "v0")][1]
    assert settled[("s3://b/raw/orders/b.csv", "w1")] == ("deleted", "deleted before its batch read it")


def test_removals_hold_the_window_but_are_never_batched() -> None:
    up = upload("s3://b/raw/orders/a.csv", 1, "01", "v1")
    gone = upload("s3://b/raw/orders/z.csv", 3, "02", removal=True)
    assert plan_chunks([up, gone], now=7, max_files=10) == {}  # the delete's window is still open
    assert plan_chunks([up, gone], now=9, max_files=10) == {"2025-07-08": [[up]]}


def test_delete_markers_are_withdrawals_and_version_deletes_are_ours() -> None:
    def body(name: str, version: str | None) -> str:
        obj = {"key": "raw/orders/a+b.csv", "size": 0, "sequencer": "0F"} | ({"versionId": version} if version else {})
        return json.dumps(
            {
                "Records": [
                    {"eventName": name, "eventTime": "2025-07-08T10:00:00Z", "s3": {"bucket": {"name": "b"}, "object": obj}}
                ]
            }
        )

    (marker,) = parse_s3_notification(body("ObjectRemoved:DeleteMarkerCreated", "m1"))
    assert marker.removed and marker.key == "raw/orders/a b.csv"
    assert parse_s3_notification(body("ObjectRemoved:Delete", "v1")) == []  # the archive deleting the version it read
    (unversioned,) = parse_s3_notification(body("ObjectRemoved:Delete", None))
    assert unversioned.removed
    item = event_item(marker, deps())
    assert item["status"] == "removal" and item["unbatched"] == "1" and "processed_flag" in item
