"""The batch_chunks table: chunk items, status transitions and the one-in-flight lock.

Every status change is a conditional write from a known previous status, so two
concurrent actors (stream trigger, controller, state machine) can never both win.
This class owns the item shapes: every Python write of a chunk or of the lock is one
of its methods (the state machine's own updateItem states are the only other writer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from cartflow.core.deps import Deps, from_ddb, query_items, scan_items, to_ddb, values
from cartflow.core.models import BatchStatus

# Key and attribute names other modules read (stream images, scans).
GROUP_KEY = "group_key"
BATCH_ID = "batch_id"
STATUS = "status"
# The lock lives in the same table under a key no chunk can have (group keys are dates);
# HOLDER is the batch id holding it, ACQUIRED_AT when (ms).
LOCK_GROUP_KEY = "#lock"
LOCK_BATCH_ID = "#inflight"
HOLDER = "holder"
ACQUIRED_AT = "acquired_at"
STATUS_INDEX = "by_status"
# Take the lock for batch :b at :t; re-entrant, so a holder left behind by a crashed
# dispatcher does not block its own batch.
_TAKE_LOCK = f"SET {HOLDER} = :b, {ACQUIRED_AT} = :t"
_LOCK_FREE_OR_OURS = f"attribute_not_exists({HOLDER}) OR {HOLDER} = :b"


def chunk_key(group_key: str, batch_id: str) -> dict[str, Any]:
    """The table key of a chunk (DynamoDB wire format)."""
    return {GROUP_KEY: {"S": group_key}, BATCH_ID: {"S": batch_id}}


LOCK_KEY = chunk_key(LOCK_GROUP_KEY, LOCK_BATCH_ID)


def is_lock(item: Mapping[str, Any]) -> bool:
    """True for the lock item (plain values: a scanned item or a stream image)."""
    return item.get(GROUP_KEY) == LOCK_GROUP_KEY


@dataclass(frozen=True)
class Chunk:
    group_key: str
    batch_id: str
    status: str
    created_at: int
    file_paths: list[str]
    file_versions: dict[str, str] = field(default_factory=dict)  # raw URI -> the uploaded S3 version
    execution_arn: str | None = None
    processing_started_at: int | None = None
    processing_date: str | None = None
    error: str | None = None
    file_outcomes: str | None = None  # JSON list of FileOutcome, set by MarkDone
    worker_heartbeat_at: int | None = None  # ms; the local spark-runner's last sign of life
    auto_reruns: int = 0  # times the watchdog re-queued it after its worker went silent
    attempt: int = 0  # operator retries so far (`cartflow batches retry`); names the execution
    replaces: list[str] = field(default_factory=list)  # a backfill's original batches
    file_sources: dict[str, str] = field(default_factory=dict)  # a backfill: raw URI -> archived key it reads
    input_bytes: int = 0  # the uploads' sizes summed: routes the batch (BatchInput.input_bytes)

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Chunk:
        return cls.from_dict(from_ddb(item))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Chunk:
        return cls(
            group_key=d[GROUP_KEY],
            batch_id=d[BATCH_ID],
            status=d[STATUS],
            created_at=int(d["created_at"]),
            file_paths=list(d.get("file_paths", [])),
            file_versions={str(k): str(v) for k, v in (d.get("file_versions") or {}).items()},
            execution_arn=d.get("execution_arn"),
            processing_started_at=int(d["processing_started_at"]) if "processing_started_at" in d else None,
            processing_date=d.get("processing_date"),
            error=d.get("error"),
            file_outcomes=d.get("file_outcomes"),
            worker_heartbeat_at=int(d["worker_heartbeat_at"]) if "worker_heartbeat_at" in d else None,
            auto_reruns=int(d.get("auto_reruns", 0)),
            attempt=int(d.get("attempt", 0)),
            replaces=list(d.get("replaces") or []),
            file_sources={str(k): str(v) for k, v in (d.get("file_sources") or {}).items()},
            input_bytes=int(d.get("input_bytes", 0)),
        )

    @property
    def key(self) -> dict[str, Any]:
        return chunk_key(self.group_key, self.batch_id)


class BatchTable:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.ddb = deps.clients.dynamodb
        self.name = deps.settings.batch_chunks_table

    # ------------------------------------------------------------------ reads
    def by_status(self, status: BatchStatus, limit: int | None = None) -> list[Chunk]:
        """Chunks in a status, oldest first (GSI by_status: status / created_at)."""
        items = query_items(
            self.ddb,
            limit,
            TableName=self.name,
            IndexName=STATUS_INDEX,
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": STATUS},
            ExpressionAttributeValues=values(s=status.value),
            ScanIndexForward=True,
        )
        return [Chunk.from_dict(d) for d in items]

    def get(self, group_key: str, batch_id: str) -> Chunk | None:
        item = self.ddb.get_item(TableName=self.name, Key=chunk_key(group_key, batch_id), ConsistentRead=True).get("Item")
        return Chunk.from_item(item) if item else None

    def all(self) -> list[Chunk]:
        chunks = [Chunk.from_dict(d) for d in scan_items(self.ddb, self.name) if not is_lock(d)]
        return sorted(chunks, key=lambda c: (c.created_at, c.batch_id))

    def lock_holder(self) -> tuple[str | None, int | None]:
        item = self.ddb.get_item(TableName=self.name, Key=LOCK_KEY, ConsistentRead=True).get("Item") or {}
        holder = item.get(HOLDER, {}).get("S")
        acquired = int(item[ACQUIRED_AT]["N"]) if ACQUIRED_AT in item else None
        return holder, acquired

    # ------------------------------------------------------------------ conditional writes
    def _conditional(self, **kwargs: Any) -> bool:
        try:
            self.ddb.update_item(TableName=self.name, **kwargs)
            return True
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return False

    def create(
        self,
        group_key: str,
        batch_id: str,
        created_ms: int,
        file_paths: Sequence[str],
        batch_start_timestamp: Decimal,
        *,
        with_writes: Sequence[dict[str, Any]] = (),
        file_versions: Mapping[str, str] | None = None,
        replaces: Sequence[str] = (),
        file_sources: Mapping[str, str] | None = None,
        input_bytes: int = 0,
    ) -> bool:
        """Create a pending chunk in one transaction with ``with_writes`` (the debouncer marks
        the chunk's events batched in it); False when the transaction was cancelled (a
        concurrent run created the chunk or took one of its events first)."""
        chunk = {
            GROUP_KEY: group_key,
            BATCH_ID: batch_id,
            STATUS: BatchStatus.PENDING.value,
            "created_at": created_ms,
            "batch_start_timestamp": batch_start_timestamp,
            "file_paths": list(file_paths),
            "file_count": len(file_paths),
        }
        if file_versions:
            chunk["file_versions"] = dict(file_versions)
        if replaces:
            chunk["replaces"] = list(replaces)  # a backfill: the batches whose uploads it re-runs
        if file_sources:
            chunk["file_sources"] = dict(file_sources)
        if input_bytes:
            chunk["input_bytes"] = input_bytes
        put = {"Put": {"TableName": self.name, "Item": to_ddb(chunk), "ConditionExpression": "attribute_not_exists(batch_id)"}}
        try:
            self.ddb.transact_write_items(TransactItems=[put, *with_writes])
            return True
        except self.ddb.exceptions.TransactionCanceledException:
            return False

    def stamp_worker_heartbeat(self, group_key: str, batch_id: str) -> bool:
        """worker_heartbeat_at = now on a processing chunk (the local spark-runner's sign of life,
        read by the controller's watchdog); False when the chunk is not processing."""
        return self._conditional(
            Key=chunk_key(group_key, batch_id),
            UpdateExpression="SET worker_heartbeat_at = :t",
            ConditionExpression="#s = :p",
            ExpressionAttributeNames={"#s": STATUS},
            ExpressionAttributeValues=values(t=self.deps.now_ms(), p=BatchStatus.PROCESSING.value),
        )

    def acquire_lock(self, batch_id: str) -> bool:
        return self._conditional(
            Key=LOCK_KEY,
            UpdateExpression=_TAKE_LOCK,
            ConditionExpression=_LOCK_FREE_OR_OURS,
            ExpressionAttributeValues=values(b=batch_id, t=self.deps.now_ms()),
        )

    def release_lock(self, batch_id: str) -> bool:
        return self._conditional(
            Key=LOCK_KEY,
            UpdateExpression=f"REMOVE {HOLDER}, {ACQUIRED_AT}",
            ConditionExpression=f"{HOLDER} = :b",
            ExpressionAttributeValues=values(b=batch_id),
        )

    def lock_and_claim(self, chunk: Chunk, processing_date: str) -> bool:
        """Take the in-flight lock for the chunk and claim it (pending -> processing) atomically.

        Two separate writes race: with a lock that is re-entrant per batch id (so a holder
        left behind by a crashed dispatcher does not block its own batch), a dispatcher
        whose claim lost to another one's would release the lock the winner relies on, and
        a second batch could start. One transaction has no such window: either both
        writes happen or neither, and nothing has to be given back.
        """
        now = self.deps.now_ms()
        try:
            self.ddb.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.name,
                            "Key": LOCK_KEY,
                            "UpdateExpression": _TAKE_LOCK,
                            "ConditionExpression": _LOCK_FREE_OR_OURS,
                            "ExpressionAttributeValues": values(b=chunk.batch_id, t=now),
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.name,
                            "Key": chunk.key,
                            "UpdateExpression": "SET #s = :p, processing_started_at = :t, processing_date = :d",
                            "ConditionExpression": "#s = :pending",
                            "ExpressionAttributeNames": {"#s": STATUS},
                            "ExpressionAttributeValues": values(
                                p=BatchStatus.PROCESSING.value, pending=BatchStatus.PENDING.value, t=now, d=processing_date
                            ),
                        }
                    },
                ]
            )
            return True
        except self.ddb.exceptions.TransactionCanceledException:
            return False

    def set_execution(self, chunk: Chunk, execution_arn: str) -> bool:
        return self._conditional(
            Key=chunk.key,
            UpdateExpression="SET execution_arn = :a",
            ConditionExpression="#s = :p",
            ExpressionAttributeNames={"#s": STATUS},
            ExpressionAttributeValues=values(a=execution_arn, p=BatchStatus.PROCESSING.value),
        )

    def unclaim(self, chunk: Chunk, reason: str) -> bool:
        """processing -> pending when the execution could not be started."""
        return self._conditional(
            Key=chunk.key,
            UpdateExpression="SET #s = :pending, last_start_error = :e REMOVE processing_started_at, execution_arn",
            ConditionExpression="#s = :p",
            ExpressionAttributeNames={"#s": STATUS},
            ExpressionAttributeValues=values(pending=BatchStatus.PENDING.value, p=BatchStatus.PROCESSING.value, e=reason),
        )

    def requeue_lost(self, chunk: Chunk, reason: str) -> bool:
        """processing -> pending after the watchdog stopped an execution whose worker went silent.

        The next dispatch starts it as a new attempt (a new execution name); the attempt
        condition keeps two controllers from re-queuing it twice.
        """
        vals: dict[str, Any] = {
            "pending": BatchStatus.PENDING.value, "p": BatchStatus.PROCESSING.value, "next": chunk.attempt + 1,
            "reruns": chunk.auto_reruns + 1, "e": reason, "none": [], "prev": [chunk.execution_arn or ""],
        }  # fmt: skip
        condition = "#s = :p AND " + ("attempt = :a" if chunk.attempt else "attribute_not_exists(attempt)")
        if chunk.attempt:
            vals["a"] = chunk.attempt
        return self._conditional(
            Key=chunk.key,
            UpdateExpression=(
                "SET #s = :pending, attempt = :next, auto_reruns = :reruns, last_rerun_reason = :e, "
                "previous_executions = list_append(if_not_exists(previous_executions, :none), :prev) "
                "REMOVE execution_arn, processing_started_at, worker_heartbeat_at, execution_entered_at"
            ),
            ConditionExpression=condition,
            ExpressionAttributeNames={"#s": STATUS},
            ExpressionAttributeValues=values(**vals),
        )

    def reopen_failed(self, chunk: Chunk) -> bool:
        """failed -> pending for an operator retry; False when the chunk or the lock says no.

        One transaction with a check on the lock: the failed execution releases the lock
        *after* marking the chunk failed, and the lock is re-entrant per batch id, so a
        retry dispatched before that release would have its lock removed by the old
        execution and a second batch could start. The attempt condition makes a retry
        based on a stale read (someone else retried meanwhile) fail instead of skipping one.
        """
        sets = ["#s = :pending", "attempt = :next", "retried_at = :t"]
        vals: dict[str, Any] = {
            "pending": BatchStatus.PENDING.value,
            "failed": BatchStatus.FAILED.value,
            "next": chunk.attempt + 1,
            "t": self.deps.now_ms(),
        }
        if chunk.execution_arn:  # keep the history: every execution this batch ever had
            sets.append("previous_executions = list_append(if_not_exists(previous_executions, :none), :prev)")
            vals.update(none=[], prev=[chunk.execution_arn])
        if chunk.attempt:
            vals["a"] = chunk.attempt
        update = (
            f"SET {', '.join(sets)} REMOVE #e, failed_step, finished_at, finalized_by, execution_arn,"
            " processing_started_at, processing_date, last_start_error"
        )
        condition = "#s = :failed AND " + ("attempt = :a" if chunk.attempt else "attribute_not_exists(attempt)")
        try:
            self.ddb.transact_write_items(
                TransactItems=[
                    {
                        "ConditionCheck": {
                            "TableName": self.name,
                            "Key": LOCK_KEY,
                            "ConditionExpression": f"attribute_not_exists({HOLDER}) OR {HOLDER} <> :b",
                            "ExpressionAttributeValues": values(b=chunk.batch_id),
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.name,
                            "Key": chunk.key,
                            "UpdateExpression": update,
                            "ConditionExpression": condition,
                            "ExpressionAttributeNames": {"#s": STATUS, "#e": "error"},
                            "ExpressionAttributeValues": values(**vals),
                        }
                    },
                ]
            )
            return True
        except self.ddb.exceptions.TransactionCanceledException:
            return False

    def finish(self, chunk: Chunk, status: BatchStatus, error: str | None = None) -> bool:
        """processing -> done|failed (used by the controller when the state machine could not)."""
        expr = "SET #s = :new, finished_at = :t, finalized_by = :who"
        vals = {"new": status.value, "p": BatchStatus.PROCESSING.value, "t": self.deps.now_ms(), "who": "controller"}
        if error:
            expr += ", #e = :e"
            vals["e"] = error[:2000]
        return self._conditional(
            Key=chunk.key,
            UpdateExpression=expr,
            ConditionExpression="#s = :p",
            ExpressionAttributeNames={"#s": STATUS, **({"#e": "error"} if error else {})},
            ExpressionAttributeValues=values(**vals),
        )
