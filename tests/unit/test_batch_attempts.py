"""Retry attempts name their executions; the controller follows the recorded one (stub SFN)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from cartflow.core.batch_table import Chunk
from cartflow.core.config import Settings
from cartflow.core.deps import Deps
from cartflow.ops.actions import retry_command
from services.controller import ControllerReport, reconcile_processing
from services.dispatch import MAX_EXECUTION_NAME, execution_arn, execution_name

BATCH = "b1751968800000-2025-07-08-000"


def chunk(attempt: int = 0, arn: str | None = None, batch_id: str = BATCH) -> Chunk:
    return Chunk(
        "2025-07-08",
        batch_id,
        "processing",
        1,
        ["s3://b/raw/orders/o.csv"],
        execution_arn=arn,
        processing_started_at=1,
        attempt=attempt,
    )


def test_execution_names_are_unique_per_attempt_and_fit_the_limit() -> None:
    assert execution_name(chunk()) == BATCH
    assert execution_name(chunk(1)) == f"{BATCH}-r1"
    long = "b" * 80
    names = {execution_name(chunk(n, batch_id=long)) for n in range(12)}
    assert len(names) == 12 and all(len(n) <= MAX_EXECUTION_NAME for n in names)


def test_attempt_is_read_from_the_item() -> None:
    item = {"group_key": "g", "batch_id": BATCH, "status": "failed", "created_at": 1, "attempt": 2}
    assert Chunk.from_dict(item).attempt == 2
    assert Chunk.from_dict({k: v for k, v in item.items() if k != "attempt"}).attempt == 0


class Sfn:
    class exceptions:
        ExecutionDoesNotExist = KeyError

    def __init__(self, statuses: dict[str, str]) -> None:
        self.statuses = statuses
        self.described: list[str] = []

    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        self.described.append(executionArn)
        return {"status": self.statuses[executionArn]}


class Table:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def set_execution(self, c: Chunk, arn: str) -> bool:
        self.calls.append(("set_execution", arn))
        return True

    def finish(self, c: Chunk, status: Any, error: str | None = None) -> bool:
        self.calls.append(("finish", status.value))
        return True

    def release_lock(self, batch_id: str) -> bool:
        self.calls.append(("release_lock", batch_id))
        return True


def deps(sfn: Sfn) -> Deps:
    return Deps(settings=Settings(), clients=SimpleNamespace(sfn=sfn), clock=lambda: 2.0)  # type: ignore[arg-type]


def test_controller_follows_the_recorded_execution_not_the_first_attempt() -> None:
    d = deps(Sfn({}))
    first, retry = execution_arn(d, BATCH), execution_arn(d, f"{BATCH}-r1")
    sfn = Sfn({first: "ABORTED", retry: "RUNNING"})
    d = deps(sfn)
    table, report = Table(), ControllerReport()
    reconcile_processing(d, table, chunk(1, arn=retry), report)  # type: ignore[arg-type]
    assert sfn.described == [retry] and report.finalized == {} and table.calls == []
    # ARN write lost: derive this attempt's name, never the bare batch id.
    reconcile_processing(d, table, chunk(1), report)  # type: ignore[arg-type]
    assert sfn.described[-1] == retry and table.calls == [("set_execution", retry)] and report.finalized == {}


def test_alert_retry_command() -> None:
    assert retry_command(BATCH) == f"cartflow batches retry {BATCH}"


def test_failure_alert_carries_batch_id_error_and_the_retry_command() -> None:
    import json
    import re
    from pathlib import Path

    asl = json.loads((Path(__file__).resolve().parents[2] / "orchestrator" / "state_machine.asl.json").read_text())
    message = asl["States"]["NotifyFailure"]["Parameters"]["Message"]
    assert message["batch_id.$"] == "$.batch_id" and message["failure.$"] == "$.failure"  # failure = step + error
    m = re.fullmatch(r"States\.Format\('(.*)', \$\.batch_id\)", message["retry_command.$"])
    assert m, message["retry_command.$"]
    assert m.group(1).replace("{}", BATCH) == retry_command(BATCH)  # what `cartflow batches retry` accepts
