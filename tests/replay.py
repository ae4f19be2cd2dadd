"""Helpers for redelivery tests: capture real events (SQS messages, stream records), replay
them to the handlers in-process, and compare tables byte for byte."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

from cartflow.core.deps import Deps, scan_items
from cartflow.local.lambda_context import LocalFunction
from cartflow.local.sqs_source import sqs_event_record
from cartflow.local.stream_source import stream_event_record


def _plain(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)  # exact: "1.50" and "1.5" differ, as they would for a reader
    if isinstance(v, set | frozenset):
        return sorted(_plain(x) for x in v)
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def snapshot(deps: Deps, table: str) -> str:
    """Every item of ``table`` as one canonical JSON string (sorted items, sorted keys)."""
    rows = [json.dumps(_plain(i), sort_keys=True) for i in scan_items(deps.clients.dynamodb, table)]
    return "[" + ",\n".join(sorted(rows)) + "]"


def invoke(deps: Deps, name: str, handler: Any, event: dict[str, Any]) -> Any:
    """Call a handler the way the local runners do (fresh Lambda context per call)."""
    return LocalFunction(name=f"cartflow-{name}", handler=handler, settings=deps.settings).invoke(event)


def queue_url(deps: Deps, name: str) -> str:
    return str(deps.clients.sqs.get_queue_url(QueueName=name)["QueueUrl"])


def receive_all(deps: Deps, url: str, *, expected: int, timeout: float = 30.0, delete: bool = False) -> list[dict[str, Any]]:
    """Receive at least ``expected`` messages (then until the queue is quiet); hidden 10 min."""
    sqs, got = deps.clients.sqs, {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msgs = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            VisibilityTimeout=600,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        for m in msgs:
            got[m["MessageId"]] = m
            if delete:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        if not msgs and len(got) >= expected:
            break
    assert len(got) >= expected, f"only {len(got)} of {expected} messages arrived"
    return list(got.values())


def sqs_records(deps: Deps, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    s = deps.settings
    return [sqs_event_record(m, queue_arn=s.ingest_queue_arn, region=s.region) for m in messages]


class StreamTap:
    """An independent reader of a table's stream (like a second event source mapping)."""

    def __init__(self, deps: Deps, table: str) -> None:
        self.deps = deps
        self.arn = str(deps.clients.dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"])
        self._iterators: dict[str, str | None] = {}

    def read_new(self) -> list[dict[str, Any]]:
        """Records written since the last call (from TRIM_HORIZON on the first), as Lambda records."""
        streams = self.deps.clients.streams
        out: list[dict[str, Any]] = []
        for shard in streams.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"]:
            sid = shard["ShardId"]
            if sid not in self._iterators:
                self._iterators[sid] = streams.get_shard_iterator(
                    StreamArn=self.arn, ShardId=sid, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            while self._iterators[sid]:
                resp = streams.get_records(ShardIterator=self._iterators[sid], Limit=1000)
                self._iterators[sid] = resp.get("NextShardIterator")
                out += [stream_event_record(r, stream_arn=self.arn, region=self.deps.settings.region) for r in resp["Records"]]
                if not resp["Records"]:
                    break
        return out


def executions(deps: Deps) -> list[dict[str, Any]]:
    pages = deps.clients.sfn.get_paginator("list_executions").paginate(stateMachineArn=deps.settings.state_machine_arn)
    return [e for page in pages for e in page["executions"]]
