"""BatchTable owns the chunk and lock item shapes: the debouncer, the stream trigger and the
spark-runner go through it (a recording stub client, no emulator; the same writes against
MiniStack are in tests/integration/test_functions.py and test_one_in_flight.py)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from cartflow.core.batch_table import LOCK_KEY, BatchTable, chunk_key, is_lock
from cartflow.core.config import Settings
from cartflow.core.deps import Deps
from services.debouncer import PendingEvent, close_quiet_groups


class ConditionalCheckFailed(Exception):
    pass


class TransactionCanceled(Exception):
    pass


class Ddb:
    """Records writes; ``fail`` makes the next write fail its condition."""

    exceptions = SimpleNamespace(
        ConditionalCheckFailedException=ConditionalCheckFailed, TransactionCanceledException=TransactionCanceled
    )

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail = False

    def _write(self, name: str, kw: dict[str, Any], error: type[Exception]) -> dict[str, Any]:
        self.calls.append((name, kw))
        if self.fail:
            self.fail = False
            raise error()
        return {}

    def update_item(self, **kw: Any) -> dict[str, Any]:
        return self._write("update_item", kw, ConditionalCheckFailed)

    def transact_write_items(self, **kw: Any) -> dict[str, Any]:
        return self._write("transact_write_items", kw, TransactionCanceled)


@pytest.fixture
def ddb() -> Ddb:
    return Ddb()


@pytest.fixture
def deps(ddb: Ddb, tmp_path: Path) -> Deps:
    clients: Any = SimpleNamespace(dynamodb=ddb)
    return Deps(settings=Settings(state_dir=tmp_path), clients=clients, clock=lambda: 1_751_968_800.5)


def test_the_lock_key_is_no_chunk_key() -> None:
    assert chunk_key("#lock", "#inflight") == LOCK_KEY
    assert is_lock({"group_key": "#lock", "holder": "b1"}) and not is_lock({"group_key": "2025-07-08"})


def test_create_puts_a_pending_chunk_first_in_the_callers_transaction(deps: Deps, ddb: Ddb) -> None:
    extra = [{"Update": {"TableName": "events"}}]
    assert BatchTable(deps).create("2025-07-08", "b1", 5, ["s3://b/raw/orders/o.csv"], Decimal("1.5"), with_writes=extra)
    [(name, kw)] = ddb.calls
    put, *rest = kw["TransactItems"]
    assert name == "transact_write_items" and rest == extra
    assert put["Put"]["TableName"] == deps.settings.batch_chunks_table
    assert put["Put"]["ConditionExpression"] == "attribute_not_exists(batch_id)"
    assert put["Put"]["Item"] == {
        "group_key": {"S": "2025-07-08"},
        "batch_id": {"S": "b1"},
        "status": {"S": "pending"},
        "created_at": {"N": "5"},
        "batch_start_timestamp": {"N": "1.5"},
        "file_paths": {"L": [{"S": "s3://b/raw/orders/o.csv"}]},
        "file_count": {"N": "1"},
    }
    ddb.fail = True
    assert not BatchTable(deps).create("2025-07-08", "b1", 5, [], Decimal(1))  # a race lost: False, no error


def test_the_debouncer_creates_its_chunks_through_the_table(deps: Deps, ddb: Ddb, monkeypatch: pytest.MonkeyPatch) -> None:
    from services import debouncer

    events = [PendingEvent("2025-07-08", Decimal(i), f"s3://b/raw/orders/{i}.csv", Decimal(0)) for i in (2, 1)]
    monkeypatch.setattr(debouncer, "unbatched_events", lambda d: events)
    [batch_id] = close_quiet_groups(deps)
    [(_, kw)] = ddb.calls
    put, *updates = kw["TransactItems"]
    assert put["Put"]["Item"]["batch_id"] == {"S": batch_id}
    assert put["Put"]["Item"]["file_paths"] == {"L": [{"S": "s3://b/raw/orders/1.csv"}, {"S": "s3://b/raw/orders/2.csv"}]}
    assert [u["Update"]["TableName"] for u in updates] == [deps.settings.events_table] * 2


def test_worker_heartbeat_is_stamped_only_on_a_processing_chunk(deps: Deps, ddb: Ddb) -> None:
    assert BatchTable(deps).stamp_worker_heartbeat("2025-07-08", "b1")
    [(_, kw)] = ddb.calls
    assert kw["Key"] == chunk_key("2025-07-08", "b1")
    assert kw["UpdateExpression"] == "SET worker_heartbeat_at = :t"
    assert kw["ConditionExpression"] == "#s = :p" and kw["ExpressionAttributeNames"] == {"#s": "status"}
    assert kw["ExpressionAttributeValues"] == {":t": {"N": "1751968800500"}, ":p": {"S": "processing"}}
    ddb.fail = True
    assert not BatchTable(deps).stamp_worker_heartbeat("2025-07-08", "b1")


def test_the_spark_runner_stamps_through_the_table(tmp_path: Path) -> None:
    from cartflow.local.spark_runner import SparkRunner

    class Batches:
        def __init__(self) -> None:
            self.stamped: list[tuple[str, str]] = []

        def stamp_worker_heartbeat(self, group_key: str, batch_id: str) -> bool:
            self.stamped.append((group_key, batch_id))
            return True

    class Sfn:
        def send_task_failure(self, **kw: Any) -> None:
            pass

    batches: Any = Batches()
    runner = SparkRunner(
        Settings(state_dir=tmp_path), Sfn(), jobs={"validate": lambda *a: None}, arns={"validate": "arn:x"}, batches=batches
    )
    runner.handle_task("validate", "t1", json.dumps({"group_key": "2025-07-08", "batch_id": "b1"}))
    assert batches.stamped == [("2025-07-08", "b1")]  # on pick-up: the watchdog's clock restarts
