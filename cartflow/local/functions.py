"""Which local event source feeds which function: the local twin of the AWS triggers.

| function       | AWS trigger                        | local source                  |
|----------------|------------------------------------|-------------------------------|
| ingest         | S3 -> SQS -> Lambda event mapping  | SqsSource (long poll)         |
| stream-trigger | DynamoDB Streams event mapping     | DynamoDBStreamSource          |
| debouncer      | EventBridge Scheduler              | ScheduleSource                |
| controller     | EventBridge Scheduler              | ScheduleSource                |
| spark-runner   | (ECS task on AWS)                  | Step Functions activity worker|
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

from cartflow.core.aws import AwsClients
from cartflow.core.config import Settings
from cartflow.core.errors import Needs, check_ready, explain, retry_bounded
from cartflow.core.retry import DEFAULT_JITTER
from cartflow.local.lambda_context import LocalFunction
from cartflow.local.schedule_source import ScheduleSource
from cartflow.local.sources import PollingSource
from cartflow.local.sqs_source import SqsSource
from cartflow.local.stream_source import DynamoDBStreamSource

FUNCTIONS = ("ingest", "stream-trigger", "debouncer", "controller")
log = logging.getLogger(__name__)


def needs(name: str, settings: Settings) -> Needs:
    """What each component touches, checked once at start so a missing one fails loudly."""
    s = settings
    return {
        "ingest": Needs(tables=(s.events_table, s.idempotency_table), queues=(s.ingest_queue,)),
        "stream-trigger": Needs(tables=(s.batch_chunks_table,), state_machines=(s.state_machine_arn,)),
        "debouncer": Needs(tables=(s.events_table, s.batch_chunks_table)),
        "controller": Needs(tables=(s.batch_chunks_table,), state_machines=(s.state_machine_arn,)),
        "spark-runner": Needs(
            tables=(s.order_kpis_table, s.category_kpis_table),
            activities=(s.activity_arn(s.validate_activity), s.activity_arn(s.transform_activity)),
        ),
    }[name]


def preflight(name: str, settings: Settings, clients: AwsClients | None = None, **retry: Any) -> None:
    """Wait (bounded, exponential backoff) for the endpoint and this component's resources."""
    clients = clients or AwsClients(settings)
    # Jittered: the components of a stack start together and would otherwise retry in lockstep.
    retry.setdefault("jitter", DEFAULT_JITTER)
    retry_bounded(
        lambda: check_ready(settings.aws_endpoint_url, clients, needs(name, settings)), what=f"{name}: preflight", **retry
    )


def build_source(name: str, settings: Settings) -> PollingSource:
    from services import controller, debouncer, ingest, stream_trigger

    clients = AwsClients(settings)

    def fn(handler: Any) -> LocalFunction:
        return LocalFunction(name=f"cartflow-{name}", handler=handler, settings=settings)

    if name == "ingest":
        # A short long-poll so SIGTERM is noticed within a few seconds.
        return SqsSource(fn(ingest.handler), clients, settings.ingest_queue, wait_time_seconds=5, name=name)
    if name == "stream-trigger":
        return DynamoDBStreamSource(fn(stream_trigger.handler), clients, settings.batch_chunks_table, name=name)
    if name == "debouncer":
        return ScheduleSource(fn(debouncer.handler), settings, interval_s=settings.debouncer_interval_seconds, name=name)
    if name == "controller":
        return ScheduleSource(fn(controller.handler), settings, interval_s=settings.controller_interval_seconds, name=name)
    raise ValueError(f"unknown function {name!r}; known: {', '.join(FUNCTIONS)}, spark-runner")


def serve_forever(name: str, settings: Settings) -> None:
    """Run one component; exit 1 with one clear line when it cannot start or cannot go on."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if name not in (*FUNCTIONS, "spark-runner"):
        raise ValueError(f"unknown function {name!r}; known: {', '.join(FUNCTIONS)}, spark-runner")
    try:
        preflight(name, settings)
        if name == "spark-runner":
            from cartflow.local.spark_runner import run_forever

            run_forever(settings)
            return
        source = build_source(name, settings)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        source.run(stop)
    except Exception as exc:
        line = explain(exc, settings.aws_endpoint_url)
        if line is None:
            raise  # a bug: keep the traceback
        log.error("%s: %s", name, line)
        sys.exit(1)
