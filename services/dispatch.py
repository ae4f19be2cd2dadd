"""Start the oldest pending batch chunk, if and only if nothing is in flight.

Shared by the stream trigger (reacts within a second of a new chunk or a finished one) and
the controller (the scheduled safety net). Order of writes: take the lock for a specific
chunk and claim it (pending -> processing) in one transaction, start the execution (named
after the batch and its retry attempt, so a repeated start of one attempt cannot start a
second run), record its ARN. Any failure undoes the claim.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from aws_lambda_powertools import Logger

from cartflow.core.batch_table import BatchTable, Chunk
from cartflow.core.deps import Deps
from cartflow.core.models import BatchInput, BatchStatus, RawFile

logger = Logger(service="cartflow-dispatch", child=True)


MAX_EXECUTION_NAME = 80  # Step Functions' limit


def execution_name(chunk: Chunk) -> str:
    """The batch id for its first run, ``<batch_id>-r<n>`` for operator retry n.

    Execution names are unique per state machine (90 days on AWS), so a retry needs a new
    one; the name stays deterministic so a dispatcher that crashed after StartExecution
    adopts the run it started instead of starting another.
    """
    if not chunk.attempt:
        return chunk.batch_id
    suffix = f"-r{chunk.attempt}"
    return chunk.batch_id[: MAX_EXECUTION_NAME - len(suffix)] + suffix


def execution_arn(deps: Deps, name: str) -> str:
    s = deps.settings
    return s.arn("states", f"execution:{s.state_machine}:{name}")


def batch_input(chunk: Chunk, processing_date: str) -> BatchInput:
    """Split the chunk's file_paths by data type (orders_paths, ...), each upload with its version."""
    files = [RawFile.from_uri(uri) for uri in chunk.file_paths]
    bucket = files[0].bucket if files else ""
    batch = BatchInput.from_files(
        batch_id=chunk.batch_id,
        group_key=chunk.group_key,
        bucket=bucket,
        processing_date=processing_date,
        files=files,
        versions=chunk.file_versions,
        sources=chunk.file_sources,
        replaces=chunk.replaces,
    )
    # The state machine routes on it (a chunk written before sizes were kept: 0, Fargate).
    return batch.model_copy(update={"input_bytes": chunk.input_bytes})


def start_next_pending(deps: Deps) -> str | None:
    """Returns the batch_id started, or None when one is in flight / nothing is pending."""
    table = BatchTable(deps)
    holder, _ = table.lock_holder()
    if holder:
        return None
    pending = table.by_status(BatchStatus.PENDING, limit=1)
    if not pending:
        return None
    chunk = pending[0]
    processing_date = datetime.fromtimestamp(deps.now(), UTC).date().isoformat()
    if not table.lock_and_claim(chunk, processing_date):
        return None  # another dispatcher won the race, or our pending read was stale
    try:
        payload = batch_input(chunk, processing_date)
        arn = start_execution(deps, payload, execution_name(chunk))
    except Exception as err:
        logger.exception("could not start execution", extra={"batch_id": chunk.batch_id})
        table.unclaim(chunk, f"{type(err).__name__}: {err}"[:2000])
        table.release_lock(chunk.batch_id)
        raise
    table.set_execution(chunk, arn)
    logger.info("started batch", extra={"batch_id": chunk.batch_id, "execution_arn": arn})
    return chunk.batch_id


def start_execution(deps: Deps, payload: BatchInput, name: str | None = None) -> str:
    sfn = deps.clients.sfn
    name = name or payload.batch_id
    try:
        resp = sfn.start_execution(
            stateMachineArn=deps.settings.state_machine_arn,
            name=name,
            input=json.dumps(payload.model_dump(mode="json")),
        )
        return str(resp["executionArn"])
    except sfn.exceptions.ExecutionAlreadyExists:
        # Started by an earlier attempt whose ARN write was lost: adopt it.
        return execution_arn(deps, name)
