"""DynamoDB Streams -> handler, the way Lambda's stream event source mapping does it.

Per shard: read with GetRecords, hand batches to the handler as the Lambda DynamoDB
Streams event, and checkpoint the last acknowledged sequence number durably. Semantics
kept from Lambda:

* in-order, at-least-once per shard; a failing batch is retried with backoff and never
  skipped (Lambda's default MaximumRetryAttempts = -1), so one bad record blocks its shard;
* ``batchItemFailures`` (ReportBatchItemFailures): checkpoint up to the record before the
  lowest failed sequence number and retry from that record;
* a parent shard is finished before its children are read;
* the starting position (TRIM_HORIZON or LATEST) applies only when there is no checkpoint.
  LATEST applies only to shards present when a runner with an empty checkpoint file first
  attaches; shards and streams that appear afterwards are read from TRIM_HORIZON, or their
  records written before we noticed them would be lost.

Following the *table* (not one stream ARN) goes beyond Lambda: when the table is deleted
and re-created the old stream is drained to its end first, then the new stream is read.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from botocore.exceptions import ClientError

from cartflow.core.aws import AwsClients
from cartflow.core.errors import error_code
from cartflow.core.exceptions import CartflowError
from cartflow.core.retry import DEFAULT_JITTER, Backoff
from cartflow.local.checkpoints import CheckpointStore
from cartflow.local.lambda_context import LocalFunction
from cartflow.local.sources import PollingSource, failed_item_ids

log = logging.getLogger(__name__)

StartingPosition = Literal["TRIM_HORIZON", "LATEST"]
_MAX_GET_RECORDS = 1000  # GetRecords Limit cap; Lambda allows stream batches up to 10,000
# GetRecords errors after which a fresh iterator from the checkpoint is the fix.
_REOPEN_ITERATOR_ON = {"ExpiredIteratorException", "TrimmedDataAccessException", "ResourceNotFoundException"}


def _encode_binary(value: Any) -> Any:
    """boto3 decodes B/BS to bytes; the Lambda event keeps DynamoDB's JSON (base64 strings)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            if key == "B" and isinstance(inner, bytes | bytearray):
                out[key] = base64.b64encode(inner).decode("ascii")
            elif key == "BS" and isinstance(inner, list):
                out[key] = [base64.b64encode(b).decode("ascii") if isinstance(b, bytes) else b for b in inner]
            else:
                out[key] = _encode_binary(inner)
        return out
    if isinstance(value, list):
        return [_encode_binary(v) for v in value]
    return value


def stream_event_record(record: dict[str, Any], *, stream_arn: str, region: str) -> dict[str, Any]:
    """One GetRecords record -> one record of the Lambda DynamoDB Streams event."""
    ddb = dict(record["dynamodb"])
    created = ddb.get("ApproximateCreationDateTime")
    if isinstance(created, datetime):
        # Lambda sends epoch seconds as a JSON number; boto3 hands us a datetime.
        ddb["ApproximateCreationDateTime"] = int(created.timestamp())
    for image in ("Keys", "NewImage", "OldImage"):
        if image in ddb:
            ddb[image] = _encode_binary(ddb[image])
    out: dict[str, Any] = {
        "eventID": record["eventID"],
        "eventName": record["eventName"],
        "eventVersion": record.get("eventVersion", "1.1"),
        "eventSource": record.get("eventSource", "aws:dynamodb"),
        "awsRegion": record.get("awsRegion", region),
        "dynamodb": ddb,
        "eventSourceARN": stream_arn,
    }
    if "userIdentity" in record:  # present on TTL deletions
        out["userIdentity"] = record["userIdentity"]
    return out


@dataclass
class _Shard:
    shard_id: str
    parent_id: str | None
    initial_position: StartingPosition
    iterator: str | None = None
    # Records read but not yet acknowledged by the handler, oldest first.
    pending: list[dict[str, Any]] = field(default_factory=list)
    at_end: bool = False  # GetRecords returned no NextShardIterator: closed and fully read
    finished: bool = False  # at_end and every record acknowledged
    attempts: int = 0
    retry_at: float = 0.0


@dataclass
class _Stream:
    arn: str
    status: str = "ENABLED"
    shards: dict[str, _Shard] = field(default_factory=dict)
    refresh_at: float = 0.0

    @property
    def drained(self) -> bool:
        # Only a disabled stream (table deleted or stream turned off) gets no more shards.
        return self.status in ("DISABLED", "DISABLING") and all(s.finished for s in self.shards.values())


class _StreamGone(CartflowError):
    """The stream no longer exists (expired 24 h after being disabled)."""


class DynamoDBStreamSource(PollingSource):
    """Feeds ``function`` from the stream of table ``table_name``.

    ``name`` names the liveness and checkpoint files (``<state_dir>/<name>.checkpoints.json``);
    it defaults to the function name. ``checkpoints`` overrides that store (tests).
    """

    def __init__(
        self,
        function: LocalFunction,
        clients: AwsClients,
        table_name: str,
        *,
        starting_position: StartingPosition = "TRIM_HORIZON",
        batch_size: int = 100,
        poll_interval_s: float = 0.5,
        retry_backoff_s: float = 0.5,
        max_retry_backoff_s: float = 30.0,
        shard_refresh_s: float = 10.0,
        name: str | None = None,
        checkpoints: CheckpointStore | None = None,
    ) -> None:
        if starting_position not in ("TRIM_HORIZON", "LATEST"):
            raise ValueError(f"starting_position must be TRIM_HORIZON or LATEST, got {starting_position!r}")
        if not 1 <= batch_size <= _MAX_GET_RECORDS:
            raise ValueError(f"batch_size must be 1..{_MAX_GET_RECORDS}, got {batch_size}")
        super().__init__(name or function.name, clients.settings, idle_wait_s=poll_interval_s, error_jitter=DEFAULT_JITTER)
        self.function = function
        self.table_name = table_name
        self.starting_position: StartingPosition = starting_position
        self.batch_size = batch_size
        self.retry_backoff_s = retry_backoff_s
        self.max_retry_backoff_s = max_retry_backoff_s
        self.shard_refresh_s = shard_refresh_s
        self.checkpoints = checkpoints or CheckpointStore.for_source(clients.settings, self.name)
        self._dynamodb = clients.dynamodb
        self._streams = clients.streams
        self._stream: _Stream | None = None
        self._drained: set[str] = set()
        # See the module docstring: LATEST only for a runner with no history, at first attach.
        self._tail_ok = starting_position == "LATEST" and not self.checkpoints.stream_arns()

    # --- the poll ---------------------------------------------------------------------
    def poll_once(self) -> int:
        stream = self._stream or self._attach()
        if stream is None:
            return 0
        delivered = 0
        try:
            if time.monotonic() >= stream.refresh_at:
                self._refresh_shards(stream)
            for shard in sorted(stream.shards.values(), key=lambda s: s.shard_id):
                if self._ready(stream, shard):
                    delivered += self._poll_shard(stream, shard)
        except _StreamGone:
            log.warning("%s: stream %s no longer exists; looking for the table's current one", self.name, stream.arn)
            self.checkpoints.forget_stream(stream.arn)
            self._stream = None
            return delivered
        if stream.drained:
            log.info("%s: stream %s is disabled and fully read", self.name, stream.arn)
            self._drained.add(stream.arn)
            self._stream = None
        return delivered

    def _ready(self, stream: _Stream, shard: _Shard) -> bool:
        if shard.finished:
            return False
        parent = stream.shards.get(shard.parent_id) if shard.parent_id else None
        # A parent that is no longer listed has been trimmed: nothing left to order against.
        return parent is None or parent.finished

    def _poll_shard(self, stream: _Stream, shard: _Shard) -> int:
        if not shard.pending:
            if shard.at_end:
                self._finish(stream, shard)
                return 0
            shard.pending = self._read(stream, shard)
            if not shard.pending:
                return 0
        if time.monotonic() < shard.retry_at:
            return 0
        return self._deliver(stream, shard)

    def _finish(self, stream: _Stream, shard: _Shard) -> None:
        shard.finished = True
        self.checkpoints.mark_finished(stream.arn, shard.shard_id)
        stream.refresh_at = 0.0  # its children are readable now: list them on the next poll
        log.info("%s: shard %s closed and fully processed", self.name, shard.shard_id)

    # --- delivery and checkpoints -------------------------------------------------
    def _deliver(self, stream: _Stream, shard: _Shard) -> int:
        batch = shard.pending[: self.batch_size]
        event = {"Records": [stream_event_record(r, stream_arn=stream.arn, region=self.settings.region) for r in batch]}
        seqs = [r["dynamodb"]["SequenceNumber"] for r in batch]
        try:
            response = self.function.invoke(event)
        except Exception:
            self._schedule_retry(shard, len(batch), "handler raised", exc_info=True)
            return len(batch)
        failed = failed_item_ids(response, seqs, source=self.name)
        first_failed = min((seqs.index(s) for s in failed), default=len(batch))
        if first_failed > 0:
            self.checkpoints.set_sequence_number(stream.arn, shard.shard_id, seqs[first_failed - 1])
            del shard.pending[:first_failed]
            shard.attempts = 0  # progress: a new failing record starts its backoff from the base
        if first_failed < len(batch):
            self._schedule_retry(shard, len(batch) - first_failed, f"record {seqs[first_failed]} failed")
        else:
            shard.attempts = 0
            shard.retry_at = 0.0
        return len(batch)

    def _schedule_retry(self, shard: _Shard, count: int, why: str, *, exc_info: bool = False) -> None:
        shard.attempts += 1
        # Jittered like every retry; never longer than the plain doubling schedule.
        delay = Backoff(self.retry_backoff_s, self.max_retry_backoff_s).delay(shard.attempts)
        shard.retry_at = time.monotonic() + delay
        log.error(
            "%s: shard %s: %s; retrying %d record(s) in %.2fs (attempt %d); the shard waits, nothing is skipped",
            self.name,
            shard.shard_id,
            why,
            count,
            delay,
            shard.attempts + 1,
            exc_info=exc_info,
        )

    # --- reading ----------------------------------------------------------------------
    def _read(self, stream: _Stream, shard: _Shard) -> list[dict[str, Any]]:
        for attempt in range(2):
            if shard.iterator is None:
                shard.iterator = self._new_iterator(stream, shard)
                if shard.iterator is None:
                    return []
            try:
                resp = self._streams.get_records(ShardIterator=shard.iterator, Limit=self.batch_size)
            except ClientError as exc:
                if error_code(exc) not in _REOPEN_ITERATOR_ON or attempt:
                    raise
                # Iterators live 15 min; re-reading from the checkpoint is exact because
                # nothing past it was acknowledged (pending is empty whenever we read).
                log.info("%s: shard %s: %s; re-reading from checkpoint", self.name, shard.shard_id, error_code(exc))
                shard.iterator = None
                continue
            shard.iterator = resp.get("NextShardIterator")
            if shard.iterator is None:
                shard.at_end = True
            records: list[dict[str, Any]] = resp.get("Records", [])
            return records
        return []

    def _new_iterator(self, stream: _Stream, shard: _Shard) -> str | None:
        """An iterator after the checkpoint, else at the starting position; None if the shard is gone."""
        seq = self.checkpoints.sequence_number(stream.arn, shard.shard_id)
        position: StartingPosition = shard.initial_position if seq is None else "TRIM_HORIZON"
        kwargs: dict[str, Any] = {"StreamArn": stream.arn, "ShardId": shard.shard_id}
        try:
            if seq is not None:
                try:
                    it = self._streams.get_shard_iterator(
                        **kwargs, ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=seq
                    )["ShardIterator"]
                    log.info("%s: shard %s: reading after checkpoint %s", self.name, shard.shard_id, seq)
                    return str(it)
                except ClientError as exc:
                    if error_code(exc) != "TrimmedDataAccessException":
                        raise
                    # Past 24 h retention on AWS too: the oldest record left is the best we can do.
                    log.error(
                        "%s: checkpoint %s of shard %s was trimmed; records were lost; reading from TRIM_HORIZON",
                        self.name,
                        seq,
                        shard.shard_id,
                    )
            it = self._streams.get_shard_iterator(**kwargs, ShardIteratorType=position)["ShardIterator"]
            log.info("%s: shard %s: reading from %s", self.name, shard.shard_id, position)
            return str(it)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
        # Either the shard expired or the whole stream did; DescribeStream tells which.
        self._call(self._streams.describe_stream, StreamArn=stream.arn, Limit=1)
        log.warning("%s: shard %s no longer exists; treating it as finished", self.name, shard.shard_id)
        shard.at_end = True
        return None

    def _call(self, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                raise _StreamGone() from exc
            raise

    # --- which stream, which shards -------------------------------------------------
    def _latest_stream_arn(self) -> str | None:
        try:
            table = self._dynamodb.describe_table(TableName=self.table_name)["Table"]
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return None
            raise
        if not table.get("StreamSpecification", {}).get("StreamEnabled"):
            return None
        arn = table.get("LatestStreamArn")
        return str(arn) if arn else None

    def _attach(self) -> _Stream | None:
        latest = self._latest_stream_arn()
        for old in self.checkpoints.stream_arns():
            # Fully read and no longer the table's stream: its checkpoints can never matter again.
            if old != latest and not self.checkpoints.has_unfinished_shards(old):
                self.checkpoints.forget_stream(old)
        # Streams we checkpointed but did not finish (table re-created while we were down)
        # are drained first, oldest first, so no acknowledged-order guarantee is broken.
        older = [a for a in self.checkpoints.stream_arns() if a != latest and self.checkpoints.has_unfinished_shards(a)]
        for arn in [*older, *([latest] if latest else [])]:
            if arn in self._drained:
                continue
            stream = _Stream(arn=arn)
            try:
                self._refresh_shards(stream, initial=True)
            except _StreamGone:
                log.warning("%s: checkpointed stream %s no longer exists; dropping its checkpoints", self.name, arn)
                self.checkpoints.forget_stream(arn)
                continue
            self._tail_ok = False
            self._stream = stream
            log.info("%s: attached to %s (%d shard(s))", self.name, arn, len(stream.shards))
            return stream
        # No stream yet: whatever appears later is new to us, so read it from its start.
        self._tail_ok = False
        return None

    def _refresh_shards(self, stream: _Stream, *, initial: bool = False) -> None:
        listed: dict[str, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {"StreamArn": stream.arn}
        while True:
            desc = self._call(self._streams.describe_stream, **kwargs)["StreamDescription"]
            stream.status = desc.get("StreamStatus", stream.status)
            for shard in desc.get("Shards", []):
                listed[shard["ShardId"]] = shard
            last = desc.get("LastEvaluatedShardId")
            if not last:
                break
            kwargs["ExclusiveStartShardId"] = last
        for shard_id, shard in listed.items():
            if shard_id in stream.shards:
                continue
            position: StartingPosition = "LATEST" if initial and self._tail_ok else "TRIM_HORIZON"
            stream.shards[shard_id] = _Shard(
                shard_id=shard_id,
                parent_id=shard.get("ParentShardId"),
                initial_position=position,
                finished=self.checkpoints.is_finished(stream.arn, shard_id),
            )
        # Shards past retention drop out of the listing; forget them unless still working on them.
        for shard_id in [s for s, st in stream.shards.items() if s not in listed and not st.pending]:
            del stream.shards[shard_id]
        self.checkpoints.forget_shards_except(stream.arn, set(listed))
        stream.refresh_at = time.monotonic() + self.shard_refresh_s
