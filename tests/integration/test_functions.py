"""The four functions against a real MiniStack: S3 -> SQS -> ingest -> debouncer -> dispatch -> controller."""

from __future__ import annotations

import json
import time

import pytest

from cartflow.core.batch_table import BatchTable
from cartflow.local.functions import build_source
from cartflow.ops.views import files, scan
from services.controller import control
from services.debouncer import close_quiet_groups, unbatched_events
from services.dispatch import start_next_pending

pytestmark = pytest.mark.integration


def drain_ingest(deps, expected: int, timeout: float = 20) -> int:  # type: ignore[no-untyped-def]
    source = build_source("ingest", deps.settings)
    source.wait_time_seconds = 1
    got, deadline = 0, time.monotonic() + timeout
    while got < expected and time.monotonic() < deadline:
        got += source.poll_once()
    return got


def test_ingest_records_each_upload_once_and_rejects_unknown_keys(deps) -> None:  # type: ignore[no-untyped-def]
    s3, bucket = deps.clients.s3, deps.settings.bucket
    s3.put_object(Bucket=bucket, Key="raw/orders/orders_part1.csv", Body=b"order_id\n1\n")
    s3.put_object(Bucket=bucket, Key="raw/customers/c.csv", Body=b"x\n")
    assert drain_ingest(deps, 2) >= 2  # plus MiniStack's s3:TestEvent, which ingest ignores

    # SQS is at-least-once: the same notification delivered twice must give one event.
    sqs = deps.clients.sqs
    url = sqs.get_queue_url(QueueName=deps.settings.ingest_queue)["QueueUrl"]
    for _ in range(2):
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(_notification(bucket, "raw/orders/dup.csv")))
    drain_ingest(deps, 2, timeout=10)

    items = scan(deps, deps.settings.events_table)
    assert sorted(i["s3_path"].rsplit("/", 1)[-1] for i in items) == ["c.csv", "dup.csv", "orders_part1.csv"]
    items = [i for i in items if not i["s3_path"].endswith("dup.csv")]
    received = next(i for i in items if i["status"] == "received")
    assert received["data_type_part"] == "orders#orders_part1"
    assert received["debounce_deadline"] == received["arrival_timestamp"] + deps.settings.debounce_seconds
    assert "expires_at" not in received
    rejected = next(i for i in items if i["status"] == "rejected")
    assert "unknown data type 'customers'" in rejected["reason"]
    states = {f.s3_path.rsplit("/", 1)[-1]: f.state for f in files(deps)}
    assert states == {"orders_part1.csv": "waiting (debounce)", "c.csv": "rejected", "dup.csv": "waiting (debounce)"}


def _notification(bucket: str, key: str) -> dict:  # type: ignore[type-arg]
    return {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "eventTime": "2025-07-08T10:00:00.000Z",
                "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": 11, "eTag": "e1", "sequencer": "0A1"}},
            }
        ]
    }


def test_debouncer_batches_quiet_groups_once(deps) -> None:  # type: ignore[no-untyped-def]
    s3, bucket = deps.clients.s3, deps.settings.bucket
    for name in ("order_items/items_part1.csv", "products/products.csv"):
        s3.put_object(Bucket=bucket, Key=f"raw/{name}", Body=b"id\n1\n")
    drain_ingest(deps, 2)
    time.sleep(deps.settings.debounce_seconds + 0.2)

    created = close_quiet_groups(deps)
    assert len(created) == 2
    assert close_quiet_groups(deps) == []  # safe to run twice
    assert unbatched_events(deps) == []

    # dup.csv's event time (2025-07-08) makes it a group of its own
    chunks = BatchTable(deps).all()
    assert sorted(len(c.file_paths) for c in chunks) == [1, 3]
    chunk = next(c for c in chunks if len(c.file_paths) == 3)
    assert chunk.status == "pending"
    batched = [i for i in scan(deps, deps.settings.events_table) if i.get("batch_id") == chunk.batch_id]
    assert len(batched) == 3 and all(i["batch_id"] == chunk.batch_id and i["expires_at"] > 0 for i in batched)


def test_one_batch_in_flight_and_controller_recovers_the_lock(deps) -> None:  # type: ignore[no-untyped-def]
    table = BatchTable(deps)
    pending = {c.batch_id for c in table.all() if c.status == "pending"}
    assert len(pending) == 2
    first = start_next_pending(deps)
    assert first in pending
    chunk = table.get(next(c.group_key for c in table.all() if c.batch_id == first), first)
    assert chunk is not None and chunk.status == "processing"
    assert chunk.execution_arn and chunk.execution_arn.endswith(first)
    payload = json.loads(deps.clients.sfn.describe_execution(executionArn=chunk.execution_arn)["input"])
    split = payload["orders_paths"] + payload["order_items_paths"] + payload["products_paths"] + payload["order_lines_paths"]
    assert sorted(split) == sorted(chunk.file_paths)
    assert len(payload["archive"]) == len(chunk.file_paths)

    # The other chunk must wait while one is in flight, whoever asks.
    assert start_next_pending(deps) is None
    assert control(deps).started is None
    assert table.lock_holder()[0] == first

    # The execution dies outside the state machine's own Catch (nobody serves its activity):
    deps.clients.sfn.stop_execution(executionArn=chunk.execution_arn, error="test", cause="killed")
    report = control(deps)
    assert report.finalized == {first: "failed"}
    [second] = pending - {first}
    assert report.started == second
    assert table.get(chunk.group_key, first).status == "failed"  # type: ignore[union-attr]
    assert table.lock_holder()[0] == second
