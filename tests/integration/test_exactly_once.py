"""Exactly once under redelivery, against a real MiniStack (no Spark).

Every real event of a run is delivered THREE times to the handlers, in-process: each ingest
SQS record, each batch_chunks stream record, each debouncer and controller tick. The
tables must end exactly as after the first delivery, with one chunk per file set and one
execution per chunk. Nobody serves the job activities, so executions stay RUNNING until
the test stops them (the controller then finalizes the chunk and starts the next).
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from cartflow.core.batch_table import BatchTable
from cartflow.core.deps import Deps
from services import controller, debouncer, ingest, stream_trigger
from tests.replay import StreamTap, executions, invoke, queue_url, receive_all, snapshot, sqs_records

pytestmark = pytest.mark.integration
TIMES = 3


@pytest.fixture(scope="module")
def settings(settings):  # type: ignore[no-untyped-def]
    # Two files per chunk: one day's four files become two chunks (several file sets per group).
    return settings.model_copy(update={"max_files_per_chunk": 2})


def notification(bucket: str, key: str, when: str, sequencer: str) -> str:
    return json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "eventTime": when,
                    "s3": {
                        "bucket": {"name": bucket},
                        "object": {"key": key, "size": 3, "eTag": f"e-{sequencer}", "sequencer": sequencer},
                    },
                }
            ]
        }
    )


def tables(deps: Deps) -> tuple[str, str]:
    return snapshot(deps, deps.settings.events_table), snapshot(deps, deps.settings.batch_chunks_table)


def test_every_event_delivered_three_times_gives_one_chunk_per_file_set(deps) -> None:  # type: ignore[no-untyped-def]
    s, s3 = deps.settings, deps.clients.s3
    replayed: dict[str, int] = {}

    # --- S3 -> SQS: four real uploads today, one rejected key, two files of another day
    today = ["raw/orders/o1.csv", "raw/orders/o2.csv", "raw/order_items/i1.csv", "raw/products/p1.csv"]
    for key in [*today, "raw/customers/c.csv"]:
        s3.put_object(Bucket=s.bucket, Key=key, Body=b"id\n1\n")
    url = queue_url(deps, s.ingest_queue)
    for n, key in enumerate(("raw/orders/old1.csv", "raw/orders/old2.csv")):
        deps.clients.sqs.send_message(QueueUrl=url, MessageBody=notification(s.bucket, key, f"2025-07-08T10:00:0{n}Z", f"0A{n}"))
    records = sqs_records(deps, receive_all(deps, url, expected=7, delete=True))

    snapshots = []
    for _ in range(TIMES):  # redelivery rounds, like SQS after a lost delete
        for rec in records:
            assert invoke(deps, "ingest", ingest.handler, {"Records": [rec]})["batchItemFailures"] == []
        snapshots.append(tables(deps))
    replayed["ingest SQS records"] = len(records) * TIMES
    assert snapshots[0] == snapshots[1] == snapshots[2]
    events = json.loads(snapshots[0][0])
    assert len(events) == 7 and sum(e["status"] == "rejected" for e in events) == 1

    # --- debouncer: three ticks at once (overlapping schedules), then three more in a row
    deadline = max(float(e["debounce_deadline"]) for e in events if "debounce_deadline" in e)
    time.sleep(max(0.0, deadline - time.time() + 0.2))
    created: list[list[str]] = []
    threads = [  # each with its own clients, like separate Lambda containers
        threading.Thread(target=lambda: created.append(debouncer.close_quiet_groups(Deps.from_settings(s)))) for _ in range(TIMES)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(c) for c in created) == 3, created
    after_debounce = tables(deps)
    for _ in range(TIMES):
        assert invoke(deps, "debouncer", debouncer.handler, {}) == {"created": []}
        assert tables(deps) == after_debounce
    replayed["debouncer ticks"] = TIMES * 2

    chunks = BatchTable(deps).all()
    valid = {f"s3://{s.bucket}/{k}" for k in [*today, "raw/orders/old1.csv", "raw/orders/old2.csv"]}
    listed = [p for c in chunks for p in c.file_paths]
    assert len(listed) == len(set(listed)) and set(listed) == valid, "every file in exactly one chunk"
    assert sorted(len(c.file_paths) for c in chunks) == [2, 2, 2]
    by_path = {e["s3_path"]: e for e in json.loads(after_debounce[0])}
    assert all(by_path[p]["batch_id"] == c.batch_id for c in chunks for p in c.file_paths)

    # --- stream + controller: redeliver every record / tick 3x until every chunk ran once
    tap = StreamTap(deps, s.batch_chunks_table)
    started: list[str] = []
    for _ in range(len(chunks) + 1):
        new = tap.read_new()
        before = None
        for _ in range(TIMES):
            for rec in new:  # one record per invocation, like a batch size of 1
                invoke(deps, "stream-trigger", stream_trigger.handler, {"Records": [rec]})
            invoke(deps, "controller", controller.handler, {})
            now = tables(deps)
            assert before is None or now == before, "a redelivery changed a table"
            before = now
        replayed["stream records"] = replayed.get("stream records", 0) + len(new) * TIMES
        replayed["controller ticks"] = replayed.get("controller ticks", 0) + TIMES
        running = [c for c in BatchTable(deps).all() if c.status == "processing"]
        assert len(running) <= 1
        if not running:
            break
        started.append(running[0].batch_id)
        # The execution dies (nobody serves its activity): the controller fails it and moves on.
        deps.clients.sfn.stop_execution(executionArn=running[0].execution_arn, error="test", cause="stopped")

    runs = executions(deps)
    assert sorted(started) == sorted(c.batch_id for c in chunks), "each chunk started exactly once"
    assert sorted(e["name"] for e in runs) == sorted(started), "one execution per chunk"
    assert [c.status for c in BatchTable(deps).all()] == ["failed"] * len(chunks)
    assert tables(deps)[0] == after_debounce[0], "the events table never changed after batching"
    total = sum(replayed.values())
    print(f"\nreplayed {total} deliveries ({replayed})")
