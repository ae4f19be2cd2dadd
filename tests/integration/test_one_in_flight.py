"""One batch in flight under races, and the operator retry, against a real MiniStack.

Ten dispatchers (five controllers, five stream triggers, each thread with its own boto3
clients) hammer several pending chunks with the real state machine; nobody serves the job
activities, so an execution stays RUNNING until the test marks its chunk done by hand
(what MarkDone + ReleaseLock do) and the next may start. A sampler thread polls the table
as fast as it can; the chunks' own transition timestamps are checked too.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes import DynamoDBStreamEvent

from cartflow.core.batch_table import BatchTable
from cartflow.core.deps import Deps, scan_items, to_ddb, values
from services.controller import control
from services.stream_trigger import handle_stream
from tests.replay import StreamTap, executions

pytestmark = pytest.mark.integration
N_CHUNKS = 5
N_CONTROLLERS = N_STREAM_TRIGGERS = 5


def put_pending(deps: Deps, n: int, day: str, t0: int) -> list[str]:
    ids = []
    for i in range(n):
        batch_id = f"b{t0 + i:013d}-{day}-000"
        item = {
            "group_key": day,
            "batch_id": batch_id,
            "status": "pending",
            "created_at": t0 + i,
            "file_paths": [f"s3://{deps.settings.bucket}/raw/orders/{day}-{i}.csv"],
            "file_count": 1,
        }
        deps.clients.dynamodb.put_item(TableName=deps.settings.batch_chunks_table, Item=to_ddb(item))
        ids.append(batch_id)
    return ids


def mark_done(deps: Deps, group_key: str, batch_id: str) -> None:
    """What the state machine's MarkDone + ReleaseLock do (both conditional)."""
    table = BatchTable(deps)
    deps.clients.dynamodb.update_item(
        TableName=deps.settings.batch_chunks_table,
        Key={"group_key": {"S": group_key}, "batch_id": {"S": batch_id}},
        UpdateExpression="SET #s = :done, finished_at = :t",
        ConditionExpression="#s = :p",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues=values(done="done", p="processing", t=deps.now_ms()),
    )
    table.release_lock(batch_id)


class Sampler(threading.Thread):
    """Scans the chunk table in a tight loop and records which chunks are processing."""

    def __init__(self, settings: Any) -> None:
        super().__init__(daemon=True)
        self.deps = Deps.from_settings(settings)
        self.stop = threading.Event()
        self.samples: list[tuple[float, frozenset[str]]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            items = scan_items(self.deps.clients.dynamodb, self.deps.settings.batch_chunks_table)
            self.samples.append((time.monotonic(), frozenset(i["batch_id"] for i in items if i.get("status") == "processing")))


def test_ten_concurrent_dispatchers_never_run_two_batches(deps) -> None:  # type: ignore[no-untyped-def]
    s = deps.settings
    ids = put_pending(deps, N_CHUNKS, "2025-07-01", 1_000_000_000_000)
    inserts = StreamTap(deps, s.batch_chunks_table).read_new()
    assert len(inserts) >= N_CHUNKS
    stop, errors = threading.Event(), []

    def worker(kind: str) -> None:
        own = Deps.from_settings(s)  # own boto3 session and clients, like another container
        rnd = random.Random(kind)
        while not stop.is_set():
            try:
                if kind.startswith("controller"):
                    control(own)
                else:  # a stream trigger getting (redelivered) INSERT records
                    handle_stream(DynamoDBStreamEvent({"Records": [rnd.choice(inserts)]}), own)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            stop.wait(rnd.uniform(0, 0.01))

    sampler = Sampler(s)
    sampler.start()
    workers = [threading.Thread(target=worker, args=(f"controller-{i}",)) for i in range(N_CONTROLLERS)]
    workers += [threading.Thread(target=worker, args=(f"stream-trigger-{i}",)) for i in range(N_STREAM_TRIGGERS)]
    for w in workers:
        w.start()
    table, order = BatchTable(deps), []
    try:
        deadline = time.monotonic() + 120
        while len(order) < N_CHUNKS and time.monotonic() < deadline:
            running = [c for c in table.all() if c.status == "processing"]
            assert len(running) <= 1, running
            if running and running[0].execution_arn:
                time.sleep(0.3)  # let every dispatcher try to start another one meanwhile
                mark_done(deps, running[0].group_key, running[0].batch_id)
                order.append(running[0].batch_id)
            time.sleep(0.02)
    finally:
        stop.set()
        for w in workers:
            w.join()
        sampler.stop.set()
        sampler.join()
    assert not errors, errors[:5]
    assert order == ids, "oldest pending first, each exactly once"

    # The sampler's view: never two at once (and it did see each one processing).
    widest = max(len(p) for _, p in sampler.samples)
    seen = set().union(*(p for _, p in sampler.samples))
    print(f"\n{len(sampler.samples)} samples; max concurrent processing = {widest}")
    assert widest <= 1 and seen == set(ids)

    # The chunks' own timestamps: each claim happened after the previous chunk finished.
    chunks = sorted(table.all(), key=lambda c: c.processing_started_at or 0)
    finished = {
        i["batch_id"]: int(i["finished_at"])
        for i in scan_items(deps.clients.dynamodb, s.batch_chunks_table)
        if i["group_key"] != "#lock"
    }
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.processing_started_at is not None and nxt.processing_started_at >= finished[prev.batch_id]
    assert sorted(e["name"] for e in executions(deps)) == sorted(ids), "one execution per chunk"
    for e in executions(deps):
        deps.clients.sfn.stop_execution(executionArn=e["executionArn"])
