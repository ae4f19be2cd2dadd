"""controller (scheduled): keep exactly one batch moving.

1. Finalize chunks whose execution already ended but are still `processing` (the state
   machine normally marks them itself; this covers an execution aborted or failed outside
   its Catch) and stop executions that ran past `max_execution_seconds` (the emulator does
   not enforce activity timeouts, so a dead worker would otherwise hold the lock forever).
2. Recover a claim whose execution never started.
3. Release a lock held by a batch that is no longer processing.
4. Start the oldest pending chunk if nothing is in flight.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from cartflow.core.batch_table import BatchTable, Chunk
from cartflow.core.deps import Deps, current_deps
from cartflow.core.models import BatchStatus
from services.dispatch import execution_arn, execution_name, start_next_pending
from services.notify import publish_failure

logger = Logger(service="cartflow-controller")

START_GRACE_MS = 60_000  # a claim without an execution this old is considered lost
_TERMINAL = {
    "SUCCEEDED": BatchStatus.DONE,
    "FAILED": BatchStatus.FAILED,
    "TIMED_OUT": BatchStatus.FAILED,
    "ABORTED": BatchStatus.FAILED,
}


@dataclass
class ControllerReport:
    finalized: dict[str, str] = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)  # worker went silent: runs again
    released_lock: str | None = None
    started: str | None = None


# The emulator ends executions that were running when it stopped with this error (a local
# restart, e.g. `cartflow up --persist` stopped mid-batch): the batch did not fail, run it again.
SERVICE_RESTART = "States.ServiceRestart"


def _execution_status(deps: Deps, arn: str) -> tuple[str | None, str | None]:
    """(status, error) of the execution; (None, None) when it does not exist."""
    sfn = deps.clients.sfn
    try:
        desc = sfn.describe_execution(executionArn=arn)
    except sfn.exceptions.ExecutionDoesNotExist:
        return None, None
    return str(desc["status"]), desc.get("error")


def reconcile_processing(deps: Deps, table: BatchTable, chunk: Chunk, report: ControllerReport) -> None:
    # The recorded ARN is authoritative; the derived one (this attempt's name) only covers a
    # start whose ARN write was lost. Never the bare batch id: after a retry that would
    # describe the *previous* attempt's FAILED run and fail the new one at once.
    arn = chunk.execution_arn or execution_arn(deps, execution_name(chunk))
    status, error_name = _execution_status(deps, arn)
    age_ms = deps.now_ms() - (chunk.processing_started_at or chunk.created_at)
    if status is None:
        if age_ms > START_GRACE_MS and table.unclaim(chunk, "execution never started"):
            table.release_lock(chunk.batch_id)
            report.recovered.append(chunk.batch_id)
        return
    if not chunk.execution_arn:
        table.set_execution(chunk, arn)
    if status == "FAILED" and error_name == SERVICE_RESTART and chunk.auto_reruns < deps.settings.max_auto_reruns:
        if table.requeue_lost(chunk, "its execution ended when the emulator restarted"):
            table.release_lock(chunk.batch_id)
            report.requeued.append(chunk.batch_id)
            logger.warning("re-queued a batch interrupted by an emulator restart", extra={"batch_id": chunk.batch_id})
        return
    if status in _TERMINAL:
        outcome = _TERMINAL[status]
        error = None if outcome is BatchStatus.DONE else f"execution {status}"
        if table.finish(chunk, outcome, error):
            report.finalized[chunk.batch_id] = outcome.value
            if error:  # ended outside the state machine's Catch, which would have alerted
                publish_failure(deps, chunk, "Controller", "cartflow.ExecutionEnded", error)
        table.release_lock(chunk.batch_id)
    elif status == "RUNNING" and worker_is_silent(deps, chunk):
        watchdog(deps, table, chunk, arn, report)
    elif status == "RUNNING" and age_ms > deps.settings.max_execution_seconds * 1000:
        deps.clients.sfn.stop_execution(executionArn=arn, error="cartflow.Timeout", cause="max_execution_seconds exceeded")
        report.stopped.append(chunk.batch_id)


def worker_is_silent(deps: Deps, chunk: Chunk) -> bool:
    """No heartbeat from a spark-runner for job_heartbeat_seconds (local Activity workers only).

    On AWS, Step Functions enforces HeartbeatSeconds and ECS reports a dead task itself; the
    emulator enforces neither, so the runner also stamps the chunk and we watch the stamp.
    """
    if deps.settings.state_machine_target != "local":
        return False
    last = max(chunk.worker_heartbeat_at or 0, chunk.processing_started_at or chunk.created_at)
    return deps.now_ms() - last > deps.settings.job_heartbeat_seconds * 1000


def watchdog(deps: Deps, table: BatchTable, chunk: Chunk, arn: str, report: ControllerReport) -> None:
    """Stop the execution whose worker went silent; re-queue the batch, or fail it for good."""
    silent_s = (deps.now_ms() - max(chunk.worker_heartbeat_at or 0, chunk.processing_started_at or 0)) / 1000
    cause = f"no heartbeat from a spark-runner for {silent_s:.0f} s (limit {deps.settings.job_heartbeat_seconds} s)"
    with contextlib.suppress(deps.clients.sfn.exceptions.ExecutionDoesNotExist):
        deps.clients.sfn.stop_execution(executionArn=arn, error="cartflow.WorkerLost", cause=cause)
    report.stopped.append(chunk.batch_id)
    if chunk.auto_reruns < deps.settings.max_auto_reruns:
        if table.requeue_lost(chunk, cause):
            table.release_lock(chunk.batch_id)
            report.requeued.append(chunk.batch_id)
            logger.warning("re-queued a batch whose worker went silent", extra={"batch_id": chunk.batch_id, "cause": cause})
        return
    if table.finish(chunk, BatchStatus.FAILED, f"{cause}; gave up after {chunk.auto_reruns} re-runs"):
        table.release_lock(chunk.batch_id)
        report.finalized[chunk.batch_id] = BatchStatus.FAILED.value
        publish_failure(deps, chunk, "Watchdog", "cartflow.WorkerLost", cause)


def control(deps: Deps) -> ControllerReport:
    table = BatchTable(deps)
    report = ControllerReport()
    processing = table.by_status(BatchStatus.PROCESSING)
    for chunk in processing:
        reconcile_processing(deps, table, chunk, report)
    still_processing = {c.batch_id for c in processing} - set(report.finalized) - set(report.recovered) - set(report.requeued)
    holder, acquired_at = table.lock_holder()
    # Grace: dispatch takes the lock a moment before it claims the chunk.
    if (
        holder
        and deps.now_ms() - (acquired_at or 0) > START_GRACE_MS
        and holder not in still_processing
        and table.release_lock(holder)
    ):
        report.released_lock = holder
    report.started = start_next_pending(deps)
    return report


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """EventBridge Scheduler entry point."""
    return control(current_deps()).__dict__
