"""ingest: S3 ObjectCreated / delete-marker events (via SQS) -> one item in the events table.

An upload's item opens (or extends) a debounce window for its group: the group is the UTC
date the file arrived. Each upload is its own item, identified by its S3 version (ETag +
sequencer where versioning is off), so overwriting a key never merges two uploads. Keys we
cannot process are recorded as `rejected` with the reason, never dropped, so every upload
has a queryable state. A user's delete is recorded as a `removal`: the debouncer uses it to
cancel uploads of that key still waiting (docs/delivery.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from cartflow.core.deps import Deps, current_deps, to_ddb
from cartflow.core.models import EventStatus, InvalidRawKey, RawFile

logger = Logger(service="cartflow-ingest")

_MAX_COLLISION_RETRIES = 1000


@dataclass(frozen=True)
class S3ObjectCreated:
    """One S3 event on a raw key: an upload, or (``removed``) a user's delete of the key."""

    bucket: str
    key: str
    event_time: float  # epoch seconds
    size: int
    etag: str
    sequencer: str
    version_id: str | None = None
    removed: bool = False

    @property
    def idempotency_key(self) -> dict[str, str]:
        # The sequencer is unique per event on a key; the version / ETag stand in where it is absent.
        identity = self.sequencer or self.version_id or self.etag or f"{self.event_time:.6f}"
        return {"bucket": self.bucket, "key": self.key, "sequencer": ("removed:" if self.removed else "") + identity}


def _is_user_delete(rec: dict[str, Any]) -> bool:
    """A delete that withdraws a file: a delete marker (versioned bucket) or a delete of an
    unversioned key. A delete of one specific version is cartflow's own archive step."""
    name = str(rec.get("eventName", ""))
    if name == "ObjectRemoved:DeleteMarkerCreated":
        return True
    return name == "ObjectRemoved:Delete" and not rec["s3"]["object"].get("versionId")


def parse_s3_notification(body: str) -> list[S3ObjectCreated]:
    """The S3 notification inside an SQS body -> uploads and user deletes (s3:TestEvent -> [])."""
    doc = json.loads(body)
    out = []
    for rec in doc.get("Records", []):
        created = str(rec.get("eventName", "")).startswith("ObjectCreated")
        if not created and not _is_user_delete(rec):
            continue
        obj = rec["s3"]["object"]
        t = datetime.fromisoformat(rec["eventTime"].replace("Z", "+00:00"))
        out.append(
            S3ObjectCreated(
                bucket=rec["s3"]["bucket"]["name"],
                key=unquote_plus(obj["key"]),  # S3 URL-encodes keys in notifications
                event_time=t.timestamp(),
                size=int(obj.get("size", 0)),
                etag=str(obj.get("eTag", "")),
                sequencer=str(obj.get("sequencer", "")),
                version_id=str(obj["versionId"]) if obj.get("versionId") else None,
                removed=not created,
            )
        )
    return out


def event_item(obj: S3ObjectCreated, deps: Deps) -> dict[str, Any]:
    """The events-table item for one object (pure: depends only on its inputs)."""
    s = deps.settings
    group_key = datetime.fromtimestamp(obj.event_time, UTC).date().isoformat()
    arrival = Decimal(f"{obj.event_time:.6f}")
    item: dict[str, Any] = {
        "group_key": group_key,
        "arrival_timestamp": arrival,
        "s3_path": f"s3://{obj.bucket}/{obj.key}",
        "size": obj.size,
        "etag": obj.etag,
        "sequencer": obj.sequencer,
    }
    if obj.version_id:
        item["version_id"] = obj.version_id
    if obj.removed:
        # Not a file: the debouncer applies it to waiting uploads of the key, at once.
        item.update(
            data_type_part=EventStatus.REMOVAL.value,
            status=EventStatus.REMOVAL.value,
            processed_flag=False,
            debounce_deadline=arrival,
            unbatched="1",
        )
        return item
    try:
        if obj.bucket != s.bucket:
            raise InvalidRawKey(f"bucket {obj.bucket!r} is not the pipeline bucket {s.bucket!r}")
        raw = RawFile.parse(obj.bucket, obj.key)
    except InvalidRawKey as err:
        item.update(
            data_type_part="rejected",
            status=EventStatus.REJECTED.value,
            reason=str(err),
            processed_flag=True,
            expires_at=int(deps.now()) + s.event_retention_days * 86_400,
        )
        return item
    item.update(
        data_type_part=raw.data_type_part,
        status=EventStatus.RECEIVED.value,
        processed_flag=False,
        debounce_deadline=arrival + s.debounce_seconds,
        unbatched="1",  # sparse index key: present only until batched
    )
    return item


def record_object(obj: S3ObjectCreated, deps: Deps) -> dict[str, Any]:
    """Write the event item. Two files can share an arrival time: bump by 1 microsecond."""
    item = event_item(obj, deps)
    ddb = deps.clients.dynamodb
    for _ in range(_MAX_COLLISION_RETRIES):
        try:
            ddb.put_item(
                TableName=deps.settings.events_table,
                Item=to_ddb(item),
                ConditionExpression="attribute_not_exists(arrival_timestamp)",
            )
            logger.info("recorded", extra={"s3_path": item["s3_path"], "status": item["status"]})
            return item
        except ddb.exceptions.ConditionalCheckFailedException:
            item["arrival_timestamp"] += Decimal("0.000001")
            if "debounce_deadline" in item:
                item["debounce_deadline"] += Decimal("0.000001")
    raise RuntimeError(f"could not find a free arrival_timestamp for {item['s3_path']}")


def is_folder_marker(obj: S3ObjectCreated) -> bool:
    # Zero-byte "raw/orders/" style keys are console folders, not files.
    return obj.key.endswith("/") and obj.size == 0


# ------------------------------------------------------------------------------- handler

_writer: tuple[Deps, Any, IdempotencyConfig] | None = None


def _idempotent_writer(deps: Deps) -> tuple[Deps, Any, IdempotencyConfig]:
    """record_object wrapped in powertools idempotency, built once per deps (cold start)."""
    global _writer  # noqa: PLW0603 - one idempotent writer per Lambda container, rebuilt only when the deps change
    if _writer is None or _writer[0] is not deps:
        store = DynamoDBPersistenceLayer(table_name=deps.settings.idempotency_table, boto3_client=deps.clients.dynamodb)
        # SQS delivers at least once: the same object version must not open two events.
        config = IdempotencyConfig(event_key_jmespath="[bucket, key, sequencer]", expires_after_seconds=7 * 86_400)

        @idempotent_function(data_keyword_argument="key", persistence_store=store, config=config)
        def _record(key: dict[str, str], obj: S3ObjectCreated) -> dict[str, str]:
            item = record_object(obj, deps)
            return {"s3_path": item["s3_path"], "status": item["status"]}

        _writer = (deps, _record, config)
    return _writer


def handle_record(record: SQSRecord) -> list[dict[str, str]]:
    _, record_once, _ = _idempotent_writer(current_deps())
    results = []
    for obj in parse_s3_notification(record.body):
        if is_folder_marker(obj):
            continue
        results.append(record_once(key=obj.idempotency_key, obj=obj))
    return results


def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    """SQS-triggered Lambda entry point; failed messages are reported for redelivery."""
    _idempotent_writer(current_deps())[2].register_lambda_context(context)
    processor = BatchProcessor(event_type=EventType.SQS)
    return process_partial_response(event=event, record_handler=handle_record, processor=processor, context=context)
