"""cartflow.local.spark_runner with a stub Step Functions client and stub jobs (no Spark)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cartflow.core.config import Settings
from cartflow.core.models import BatchInput, TransformResult, ValidationResult
from cartflow.local.spark_runner import (
    INVALID_INPUT,
    JOB_FAILED,
    MAX_CAUSE_CHARS,
    SparkRunner,
    failure_cause,
    parse_batch,
)

VALIDATE_ARN = "arn:aws:states:us-east-1:000000000000:activity:cartflow-validate"
TRANSFORM_ARN = "arn:aws:states:us-east-1:000000000000:activity:cartflow-transform"


class TaskGone(Exception):
    response: ClassVar[dict[str, Any]] = {"Error": {"Code": "TaskTimedOut", "Message": "gone"}}


class FakeSfn:
    """Hands out queued tasks per activity ARN and records every call."""

    def __init__(self) -> None:
        self.tasks: dict[str, list[dict[str, str]]] = {VALIDATE_ARN: [], TRANSFORM_ARN: []}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.heartbeat_error: Exception | None = None

    def add(self, arn: str, batch: dict[str, Any], token: str) -> None:
        with self.lock:
            self.tasks[arn].append({"taskToken": token, "input": json.dumps(batch)})

    def get_activity_task(self, activityArn: str, workerName: str) -> dict[str, str]:
        with self.lock:
            self.calls.append(("get_activity_task", {"activityArn": activityArn, "workerName": workerName}))
            if self.tasks[activityArn]:
                return self.tasks[activityArn].pop(0)
        time.sleep(0.01)  # a (very) short "long poll"
        return {}

    def send_task_success(self, **kw: Any) -> None:
        self._record("send_task_success", kw)

    def send_task_failure(self, **kw: Any) -> None:
        self._record("send_task_failure", kw)

    def send_task_heartbeat(self, **kw: Any) -> None:
        self._record("send_task_heartbeat", kw)
        if self.heartbeat_error:
            raise self.heartbeat_error

    def _record(self, name: str, kw: dict[str, Any]) -> None:
        with self.lock:
            self.calls.append((name, kw))

    def named(self, name: str) -> list[dict[str, Any]]:
        with self.lock:
            return [kw for n, kw in self.calls if n == name]


def batch_dict(batch_id: str = "b1") -> dict[str, Any]:
    return {
        "batch_id": batch_id,
        "group_key": "g",
        "bucket": "cartflow-data",
        "processing_date": "2026-11-01",
        "orders_paths": ["s3://cartflow-data/raw/orders/a.csv"],
    }


def validation(batch: BatchInput) -> ValidationResult:
    return ValidationResult(batch_id=batch.batch_id, processing_date=batch.processing_date, status="passed", shape="tables")


def transform(batch: BatchInput) -> TransformResult:
    return TransformResult(batch_id=batch.batch_id, order_dates=[], category_kpi_rows=2, order_kpi_rows=1)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state")


def make_runner(settings: Settings, sfn: FakeSfn, jobs: dict[str, Any], **kw: Any) -> tuple[SparkRunner, list[str]]:
    built: list[str] = []

    def factory() -> str:
        built.append("spark")
        return "SPARK"

    runner = SparkRunner(
        settings,
        sfn,
        jobs=jobs,
        arns={"validate": VALIDATE_ARN, "transform": TRANSFORM_ARN},
        spark_factory=factory,
        worker_name="test-worker",
        **kw,
    )
    return runner, built


def test_success_sends_the_result_document_and_builds_spark_once(settings: Settings) -> None:
    sfn = FakeSfn()
    seen: list[tuple[Any, Settings, BatchInput]] = []

    def run_validation(spark: Any, s: Settings, batch: BatchInput) -> ValidationResult:
        seen.append((spark, s, batch))
        return validation(batch)

    runner, built = make_runner(settings, sfn, {"validate": run_validation, "transform": lambda sp, s, b: transform(b)})
    sfn.add(VALIDATE_ARN, batch_dict("b1"), "t1")
    sfn.add(TRANSFORM_ARN, {**batch_dict("b1"), "validation": {"status": "passed"}}, "t2")

    assert runner.poll_once("validate") is True
    assert runner.poll_once("transform") is True
    assert runner.poll_once("validate") is False  # empty long poll

    assert seen == [("SPARK", settings, BatchInput.model_validate(batch_dict("b1")))]
    assert built == ["spark"]  # one session for both jobs
    successes = sfn.named("send_task_success")
    assert [s["taskToken"] for s in successes] == ["t1", "t2"]
    assert ValidationResult.model_validate_json(successes[0]["output"]).status == "passed"
    assert TransformResult.model_validate_json(successes[1]["output"]).category_kpi_rows == 2
    assert sfn.named("send_task_failure") == []
    assert sfn.calls[0][1]["workerName"] == "test-worker"


def test_job_exception_sends_task_failure_with_type_and_message(settings: Settings) -> None:
    sfn = FakeSfn()

    def broken(spark: Any, s: Settings, batch: BatchInput) -> ValidationResult:
        raise FileNotFoundError("s3a://cartflow-data/raw/orders/a.csv")

    runner, _ = make_runner(settings, sfn, {"validate": broken})
    sfn.add(VALIDATE_ARN, batch_dict(), "t1")
    runner.poll_once("validate")

    assert sfn.named("send_task_success") == []
    assert sfn.named("send_task_failure") == [
        {"taskToken": "t1", "error": JOB_FAILED, "cause": "FileNotFoundError: s3a://cartflow-data/raw/orders/a.csv"}
    ]


def test_cause_is_truncated_to_the_step_functions_limit() -> None:
    cause = failure_cause(RuntimeError("x" * 100_000))
    assert len(cause) == MAX_CAUSE_CHARS
    assert cause.startswith("RuntimeError: xxx") and cause.endswith("[truncated]")


def test_invalid_input_fails_without_running_the_job(settings: Settings) -> None:
    sfn = FakeSfn()
    calls: list[BatchInput] = []
    runner, built = make_runner(settings, sfn, {"validate": lambda sp, s, b: calls.append(b) or validation(b)})
    sfn.add(VALIDATE_ARN, {**batch_dict(), "processing_date": "yesterday"}, "t1")
    runner.poll_once("validate")

    (failure,) = sfn.named("send_task_failure")
    assert failure["error"] == INVALID_INPUT and "processing_date" in failure["cause"]
    assert calls == [] and built == []


def test_a_result_for_another_batch_is_a_failure(settings: Settings) -> None:
    sfn = FakeSfn()
    runner, _ = make_runner(settings, sfn, {"validate": lambda sp, s, b: validation(b.model_copy(update={"batch_id": "x"}))})
    sfn.add(VALIDATE_ARN, batch_dict("b1"), "t1")
    runner.poll_once("validate")
    (failure,) = sfn.named("send_task_failure")
    assert failure["error"] == JOB_FAILED and "'x'" in failure["cause"]


def test_slow_job_sends_heartbeats_until_it_finishes(settings: Settings) -> None:
    sfn = FakeSfn()

    def slow(spark: Any, s: Settings, batch: BatchInput) -> ValidationResult:
        time.sleep(0.35)
        return validation(batch)

    runner, _ = make_runner(settings, sfn, {"validate": slow}, heartbeat_seconds=0.05)
    sfn.add(VALIDATE_ARN, batch_dict(), "t1")
    runner.poll_once("validate")

    names = [n for n, _ in sfn.calls if n != "get_activity_task"]
    assert names.count("send_task_heartbeat") >= 3
    assert names[-1] == "send_task_success"  # no heartbeat races the result
    assert all(kw["taskToken"] == "t1" for kw in sfn.named("send_task_heartbeat"))


def test_heartbeats_stop_when_the_task_is_gone_but_the_job_still_reports(settings: Settings) -> None:
    sfn = FakeSfn()
    sfn.heartbeat_error = TaskGone()

    def slow(spark: Any, s: Settings, batch: BatchInput) -> ValidationResult:
        time.sleep(0.3)
        return validation(batch)

    runner, _ = make_runner(settings, sfn, {"validate": slow}, heartbeat_seconds=0.05)
    sfn.add(VALIDATE_ARN, batch_dict(), "t1")
    runner.poll_once("validate")
    assert len(sfn.named("send_task_heartbeat")) == 1
    assert len(sfn.named("send_task_success")) == 1


def test_spark_session_failure_is_reported_and_retried_on_the_next_task(settings: Settings) -> None:
    sfn = FakeSfn()
    attempts: list[int] = []

    def factory() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("JVM did not start")
        return "SPARK"

    runner = SparkRunner(
        settings,
        sfn,
        jobs={"validate": lambda sp, s, b: validation(b)},
        arns={"validate": VALIDATE_ARN},
        spark_factory=factory,
    )
    sfn.add(VALIDATE_ARN, batch_dict("b1"), "t1")
    sfn.add(VALIDATE_ARN, batch_dict("b2"), "t2")
    runner.poll_once("validate")
    runner.poll_once("validate")
    assert sfn.named("send_task_failure")[0]["cause"] == "RuntimeError: JVM did not start"
    assert [s["taskToken"] for s in sfn.named("send_task_success")] == ["t2"]


def test_pollers_run_jobs_serially_touch_liveness_and_stop_gracefully(settings: Settings) -> None:
    sfn = FakeSfn()
    running = threading.Semaphore(1)
    overlaps: list[str] = []
    finished: list[str] = []

    def job(name: str) -> Any:
        def run(spark: Any, s: Settings, batch: BatchInput) -> Any:
            if not running.acquire(blocking=False):
                overlaps.append(name)
            else:
                try:
                    time.sleep(0.1)
                finally:
                    running.release()
            finished.append(f"{name}:{batch.batch_id}")
            return validation(batch) if name == "validate" else transform(batch)

        return run

    runner, built = make_runner(settings, sfn, {"validate": job("validate"), "transform": job("transform")})
    for i in range(3):
        sfn.add(VALIDATE_ARN, batch_dict(f"v{i}"), f"tv{i}")
        sfn.add(TRANSFORM_ARN, batch_dict(f"t{i}"), f"tt{i}")
    runner.start()
    deadline = time.monotonic() + 10
    while len(sfn.named("send_task_success")) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    runner.stop()
    assert runner.join(timeout=5)

    assert overlaps == []
    assert len(finished) == 6 and built == ["spark"]
    assert (settings.state_dir / "spark-runner.alive").exists()


def test_stop_finishes_the_task_in_hand(settings: Settings) -> None:
    sfn = FakeSfn()
    started = threading.Event()

    def slow(spark: Any, s: Settings, batch: BatchInput) -> ValidationResult:
        started.set()
        time.sleep(0.3)
        return validation(batch)

    runner, _ = make_runner(settings, sfn, {"validate": slow})
    sfn.add(VALIDATE_ARN, batch_dict(), "t1")
    runner.start()
    assert started.wait(5)
    runner.stop()
    assert runner.join(timeout=5)
    assert [s["taskToken"] for s in sfn.named("send_task_success")] == ["t1"]


def test_the_busy_marker_exists_from_a_task_received_until_it_is_reported(settings: Settings) -> None:
    sfn = FakeSfn()
    seen: list[bool] = []

    def job(spark: Any, s: Settings, batch: BatchInput) -> ValidationResult:
        seen.append(runner.busy.path.exists())
        return validation(batch)

    runner, _ = make_runner(settings, sfn, {"validate": job})
    reported: list[bool] = []
    sfn.send_task_success = lambda **kw: reported.append(runner.busy.path.exists())  # type: ignore[method-assign]
    sfn.add(VALIDATE_ARN, batch_dict(), "t1")
    assert not runner.busy.path.exists()
    assert runner.poll_once("validate")
    assert seen == [True] and reported == [True]  # held while running and while reporting
    assert not runner.busy.path.exists()  # idle again: a stop need not wait for it


def test_parse_batch_ignores_state_fields_beyond_the_batch() -> None:
    data = {**batch_dict(), "validation": {"status": "passed"}, "transform": {}, "error": {}}
    assert parse_batch(json.dumps(data)) == BatchInput.model_validate(batch_dict())
    with pytest.raises(ValueError):
        parse_batch("[1, 2]")
    with pytest.raises(ValueError):
        parse_batch("not json")


def test_unknown_job_without_activity_is_rejected(settings: Settings) -> None:
    with pytest.raises(ValueError, match="no activity ARN"):
        SparkRunner(settings, FakeSfn(), jobs={"compact": lambda sp, s, b: None}, arns={})


def test_warm_up_builds_the_session_then_runs_the_warm_up_batch_before_any_task(settings: Settings) -> None:
    sfn = FakeSfn()
    order: list[str] = []

    def warmup(spark: Any, s: Settings) -> float:
        order.append(f"warm-up on {spark}")
        return 1.0

    def run_validation(spark: Any, s: Settings, batch: BatchInput) -> ValidationResult:
        order.append("validate")
        return validation(batch)

    runner, built = make_runner(settings, sfn, {"validate": run_validation}, warmup_batch=warmup)
    runner.warm_up()
    sfn.add(VALIDATE_ARN, batch_dict("b1"), "t1")
    assert runner.poll_once("validate") is True
    assert order == ["warm-up on SPARK", "validate"]
    assert built == ["spark"]  # the warm session is the one the task runs on


def test_a_failing_warm_up_batch_leaves_the_runner_working(settings: Settings) -> None:
    sfn = FakeSfn()

    def warmup(spark: Any, s: Settings) -> float:
        raise RuntimeError("bucket not there yet")

    runner, built = make_runner(settings, sfn, {"validate": lambda sp, s, b: validation(b)}, warmup_batch=warmup)
    runner.warm_up()  # logged, not raised
    sfn.add(VALIDATE_ARN, batch_dict("b1"), "t1")
    assert runner.poll_once("validate") is True
    assert [s["taskToken"] for s in sfn.named("send_task_success")] == ["t1"]
    assert built == ["spark"]
