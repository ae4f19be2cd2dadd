"""SQS -> handler, the way Lambda's SQS event source mapping does it.

Long-poll a batch, hand it to the handler as the Lambda SQS event, then delete what
succeeded. With ``ReportBatchItemFailures`` semantics only the messages the handler lists
in ``batchItemFailures`` stay; if the handler raises, none is deleted, and SQS makes them
visible again after the queue's visibility timeout (then to the DLQ via the redrive policy).
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from cartflow.core.aws import AwsClients
from cartflow.core.retry import DEFAULT_JITTER
from cartflow.local.lambda_context import LocalFunction
from cartflow.local.sources import PollingSource, failed_item_ids

log = logging.getLogger(__name__)

_MAX_BATCH = 10  # ReceiveMessage and DeleteMessageBatch limit
_MAX_WAIT_S = 20  # ReceiveMessage long-poll limit


def _b64(value: bytes | str) -> str:
    # boto3 decodes Binary attributes to bytes; the Lambda event carries them base64-encoded.
    return value if isinstance(value, str) else base64.b64encode(value).decode("ascii")


def lambda_message_attribute(attr: dict[str, Any]) -> dict[str, Any]:
    """boto3's ``{"StringValue", "DataType"}`` -> Lambda's ``{"stringValue", "dataType", ...}``."""
    out: dict[str, Any] = {
        "stringListValues": list(attr.get("StringListValues", [])),
        "binaryListValues": [_b64(v) for v in attr.get("BinaryListValues", [])],
        "dataType": attr["DataType"],
    }
    if "StringValue" in attr:
        out["stringValue"] = attr["StringValue"]
    if "BinaryValue" in attr:
        out["binaryValue"] = _b64(attr["BinaryValue"])
    return out


def sqs_event_record(message: dict[str, Any], *, queue_arn: str, region: str) -> dict[str, Any]:
    """One ReceiveMessage message -> one record of the Lambda SQS event."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": dict(message.get("Attributes", {})),
        "messageAttributes": {
            name: lambda_message_attribute(attr) for name, attr in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    return record


class SqsSource(PollingSource):
    """Feeds ``function`` from the queue named ``queue_name``.

    ``wait_time_seconds`` is also how long ``run`` may take to notice ``stop``.
    ``name`` names the liveness file; it defaults to the function name.
    """

    def __init__(
        self,
        function: LocalFunction,
        clients: AwsClients,
        queue_name: str,
        *,
        batch_size: int = 10,
        wait_time_seconds: int = 20,
        name: str | None = None,
    ) -> None:
        if not 1 <= batch_size <= _MAX_BATCH:
            raise ValueError(f"batch_size must be 1..{_MAX_BATCH}, got {batch_size}")
        if not 0 <= wait_time_seconds <= _MAX_WAIT_S:
            raise ValueError(f"wait_time_seconds must be 0..{_MAX_WAIT_S}, got {wait_time_seconds}")
        # The long poll is the idle wait, so the loop never sleeps on top of it.
        super().__init__(name or function.name, clients.settings, idle_wait_s=0.0, error_jitter=DEFAULT_JITTER)
        self.function = function
        self.queue_name = queue_name
        self.batch_size = batch_size
        self.wait_time_seconds = wait_time_seconds
        self._sqs = clients.sqs
        self._queue_url: str | None = None
        self._queue_arn: str | None = None

    def _resolve_queue(self) -> tuple[str, str]:
        # Lazy: the queue may be created after the runner starts (run() retries on error).
        if self._queue_url is None or self._queue_arn is None:
            url = self._sqs.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
            attrs = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
            self._queue_url, self._queue_arn = url, attrs["QueueArn"]
            log.info("%s: polling %s", self.name, url)
        return self._queue_url, self._queue_arn

    def poll_once(self) -> int:
        url, arn = self._resolve_queue()
        messages: list[dict[str, Any]] = self._sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=self.wait_time_seconds,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        event = {"Records": [sqs_event_record(m, queue_arn=arn, region=self.settings.region) for m in messages]}
        ids = [m["MessageId"] for m in messages]
        try:
            response = self.function.invoke(event)
        except Exception:
            log.exception(
                "%s: handler raised on %d message(s); none deleted, they return after the visibility timeout",
                self.name,
                len(messages),
            )
            return len(messages)
        failed = failed_item_ids(response, ids, source=self.name)
        if failed:
            log.warning("%s: %d of %d message(s) failed and will be redelivered", self.name, len(failed), len(ids))
        self._delete([m for m in messages if m["MessageId"] not in failed], url)
        return len(messages)

    def _delete(self, messages: list[dict[str, Any]], url: str) -> None:
        if not messages:
            return
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]
        result = self._sqs.delete_message_batch(QueueUrl=url, Entries=entries)
        for failure in result.get("Failed", []):
            # Processed but not deleted: it will be delivered again, so handlers must be idempotent.
            log.error("%s: could not delete a processed message: %s", self.name, failure)
