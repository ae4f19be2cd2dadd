"""The local ``spark-runner``: a Step Functions Activity worker for the two Spark jobs.

On AWS the state machine runs each job as a Fargate task (``ecs:runTask.sync``); locally
(embedded and compose targets) the job states are Activity tasks and this process does
the work:

* one poller thread per activity (validate, transform) long-polls ``GetActivityTask``
  (up to ~60 s per call on AWS and MiniStack), so neither job waits for the other's poll;
* jobs run **serially** under one lock, on one long-lived SparkSession built on first use
  (the JVM start is paid once, not per batch; one batch is in flight by design anyway);
* while a task is held it sends ``SendTaskHeartbeat`` every ~10 s, from the moment the
  task is received (a task waiting for the run lock must not time out either);
* the result is ``SendTaskSuccess(result.model_dump_json())``; any exception becomes
  ``SendTaskFailure(error="cartflow.JobFailed", cause="<Type>: <message>")`` so the state
  machine's Retry/Catch decide what happens next;
* ``settings.state_dir / "spark-runner.alive"`` is touched on every poll and heartbeat, so
  a container healthcheck can test its age (allow > 60 s: one long poll);
* ``stop()`` is graceful: a task already received is finished and reported before the
  pollers exit. A poll in progress ends when GetActivityTask returns (<= ~60 s), so give
  the container a stop grace period of ~70 s;
* ``settings.state_dir / "spark-runner.busy"`` exists while a task is in hand: the
  embedded stack, which owns the emulator, stops an idle runner's poll by stopping the
  emulator first instead of waiting out the long poll.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from pydantic import BaseModel

from cartflow.core.batch_table import BatchTable
from cartflow.core.config import Settings
from cartflow.core.errors import error_code, explain, is_fatal
from cartflow.core.models import BatchInput
from cartflow.core.retry import Backoff
from cartflow.local.liveness import BusyMarker, Liveness

log = logging.getLogger("cartflow.spark_runner")

JOB_FAILED = "cartflow.JobFailed"
INVALID_INPUT = "cartflow.InvalidBatchInput"
MAX_CAUSE_CHARS = 32_768  # Step Functions' limit for SendTaskFailure.cause
HEARTBEAT_SECONDS = 10.0
LIVENESS_NAME = "spark-runner"  # -> <state_dir>/spark-runner.alive
SPARK_APP_NAME = "cartflow-spark-runner"
_ERROR_BACKOFF_SECONDS = 1.0  # longest first wait after a failed poll; doubles up to the max (jittered)
_MAX_ERROR_BACKOFF_SECONDS = 60.0
# Polls in a row failing on something waiting cannot fix (activity missing, bad credentials)
# before the runner gives up and the process exits 1.
MAX_FATAL_POLL_ERRORS = 5
# The task is gone (timed out or finished elsewhere): heartbeating or reporting is pointless.
_TASK_GONE_CODES = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})


class JobCallable(Protocol):
    def __call__(self, spark: Any, settings: Settings, batch: BatchInput) -> BaseModel: ...


def _run_validation(spark: Any, settings: Settings, batch: BatchInput) -> BaseModel:
    # Imported lazily: the jobs pull in pyspark, which the runner must not need at import time.
    from spark.jobs.validation import run_validation

    return run_validation(spark, settings, batch)


def _run_transform(spark: Any, settings: Settings, batch: BatchInput) -> BaseModel:
    from spark.jobs.transform import run_transform

    return run_transform(spark, settings, batch)


DEFAULT_JOBS: Mapping[str, JobCallable] = {"validate": _run_validation, "transform": _run_transform}


def activity_arns(settings: Settings) -> dict[str, str]:
    """Job name -> Activity ARN, from the settings' activity names."""
    return {
        "validate": settings.activity_arn(settings.validate_activity),
        "transform": settings.activity_arn(settings.transform_activity),
    }


def parse_batch(raw_input: str) -> BatchInput:
    """The task input as a BatchInput.

    The Transform state receives the batch plus the Validate result ($.validation); keep
    only BatchInput's own fields so the model's extra-field policy cannot reject it.
    """
    data = json.loads(raw_input)
    if not isinstance(data, dict):
        raise ValueError(f"task input must be a JSON object, got {type(data).__name__}")
    return BatchInput.model_validate({k: v for k, v in data.items() if k in BatchInput.model_fields})


def _batch_key(raw_input: str) -> tuple[str, str] | None:
    """The batch chunk's (group_key, batch_id) from a task input, or None when it is not a batch."""
    try:
        batch = json.loads(raw_input)
        return str(batch["group_key"]), str(batch["batch_id"])
    except (ValueError, KeyError, TypeError):
        return None


def failure_cause(exc: BaseException) -> str:
    """``<ExceptionType>: <message>``, truncated to what SendTaskFailure accepts."""
    cause = f"{type(exc).__name__}: {exc}"
    if len(cause) > MAX_CAUSE_CHARS:
        marker = " ...[truncated]"
        cause = cause[: MAX_CAUSE_CHARS - len(marker)] + marker
    return cause


def _jvm_is_gone(exc: BaseException) -> bool:
    """True when the SparkSession itself is unusable (not just a failing job), so rebuild it."""
    return type(exc).__name__ == "Py4JNetworkError" or isinstance(exc, ConnectionError)


def default_worker_name() -> str:
    return f"spark-runner-{socket.gethostname()}-{os.getpid()}"[:80]


class SparkRunner:
    """Activity worker for the Validate and Transform job states (see module docstring)."""

    def __init__(
        self,
        settings: Settings,
        sfn: Any,
        *,
        jobs: Mapping[str, JobCallable] | None = None,
        arns: Mapping[str, str] | None = None,
        spark_factory: Callable[[], Any] | None = None,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        worker_name: str | None = None,
        batches: BatchTable | None = None,
        warmup_batch: Callable[[Any, Settings], float] | None = None,
        poller: Any = None,
    ) -> None:
        self.settings = settings
        self.sfn = sfn
        self.poller = poller if poller is not None else sfn  # GetActivityTask only (AwsClients.sfn_poller)
        self.batches = batches  # stamps the batch chunk on every heartbeat (controller watchdog)
        self.jobs: dict[str, JobCallable] = dict(jobs if jobs is not None else DEFAULT_JOBS)
        self.arns: dict[str, str] = dict(arns if arns is not None else activity_arns(settings))
        unknown = set(self.jobs) - set(self.arns)
        if unknown:
            raise ValueError(f"no activity ARN for job(s): {sorted(unknown)}")
        self.heartbeat_seconds = heartbeat_seconds
        self.worker_name = worker_name or default_worker_name()
        self.liveness = Liveness(settings, LIVENESS_NAME)
        self.busy = BusyMarker(settings, LIVENESS_NAME)  # a task in hand: the stack's stop waits for it
        self._spark_factory = spark_factory or self._build_spark
        # Run once after the session is built, before the first task (spark_warmup.py).
        self._warmup_batch = warmup_batch
        self._spark: Any = None
        self._run_lock = threading.Lock()  # one job at a time: one JVM, one batch in flight
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.fatal_error: str | None = None  # set when a poller gave up; the process exits 1

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start one poller thread per activity (idempotent while running)."""
        if any(t.is_alive() for t in self._threads):
            return
        self._stop.clear()
        self.touch_liveness()
        self._threads = [
            threading.Thread(target=self._poll_loop, args=(job,), name=f"spark-runner-{job}", daemon=True) for job in self.jobs
        ]
        for t in self._threads:
            t.start()
        log.info("spark-runner %s polling %s", self.worker_name, ", ".join(self.arns[j] for j in self.jobs))

    def stop(self) -> None:
        """Ask the pollers to exit after their current poll/task (does not wait)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the pollers; True when all have exited."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def run_forever(self) -> None:
        """Start and block until stop() (short joins keep the main thread responsive to signals)."""
        self.start()
        while not self.join(timeout=1.0):
            pass

    def close(self) -> None:
        """Stop the SparkSession (after the pollers are done)."""
        with self._run_lock:
            spark, self._spark = self._spark, None
        if spark is not None:
            try:
                spark.stop()
            except Exception:  # shutting down anyway
                log.exception("stopping the SparkSession failed")

    # ------------------------------------------------------------------ polling

    def _poll_loop(self, job: str) -> None:
        errors = fatal = 0
        while not self._stop.is_set():
            self.touch_liveness()
            try:
                self.poll_once(job)
                errors = fatal = 0
            except Exception as exc:
                if self._stop.is_set():
                    return  # shutting down; the endpoint may already be gone
                errors += 1
                fatal = fatal + 1 if is_fatal(exc) else 0
                line = explain(exc, self.settings.aws_endpoint_url)
                if fatal >= MAX_FATAL_POLL_ERRORS:
                    # Missing activity / bad credentials: waiting will not fix it. Stop every
                    # poller so run_forever returns and the process exits 1.
                    self.fatal_error = f"polling {job}: {line or exc}"
                    log.error("giving up: %s", self.fatal_error)
                    self.stop()
                    return
                # Emulator restarting, network blip, throttling: keep the worker alive, but
                # back off exponentially and log a known cause in one line, not a traceback.
                delay = Backoff(_ERROR_BACKOFF_SECONDS, _MAX_ERROR_BACKOFF_SECONDS).delay(errors)
                if line is None:
                    log.exception("polling %s failed; retrying in %.0f s", job, delay)
                else:
                    log.error("polling %s failed (%d in a row): %s; retrying in %.0f s", job, errors, line, delay)
                self._stop.wait(delay)

    def poll_once(self, job: str) -> bool:
        """One GetActivityTask long poll for ``job``; handle the task if one came. True if so."""
        response = self.poller.get_activity_task(activityArn=self.arns[job], workerName=self.worker_name)
        token = response.get("taskToken")
        if not token:
            return False  # long poll ended without work
        # A delivered task is always finished, even after stop(): dropping it would leave
        # the execution waiting for its heartbeat timeout (forever on MiniStack).
        with self.busy.holding():
            self.handle_task(job, token, response.get("input") or "{}")
        return True

    # ------------------------------------------------------------------ one task

    def handle_task(self, job: str, token: str, raw_input: str) -> None:
        """Run ``job`` for one task and report the outcome to Step Functions."""
        started = time.monotonic()
        with self._heartbeats(token, _batch_key(raw_input)):
            outcome = self._run_job(job, raw_input)
        elapsed = time.monotonic() - started
        if isinstance(outcome, str):
            log.info("%s succeeded in %.1f s", job, elapsed)
            self._report("send_task_success", taskToken=token, output=outcome)
        else:
            error, exc = outcome
            log.warning("%s failed in %.1f s: %s", job, elapsed, failure_cause(exc)[:500])
            self._report("send_task_failure", taskToken=token, error=error, cause=failure_cause(exc))

    def _run_job(self, job: str, raw_input: str) -> str | tuple[str, BaseException]:
        """The result JSON, or (error name, exception)."""
        try:
            batch = parse_batch(raw_input)
        except ValueError as exc:  # includes pydantic.ValidationError and JSONDecodeError
            return INVALID_INPUT, exc
        with self._run_lock:
            log.info("running %s for batch %s", job, batch.batch_id)
            try:
                result = self.jobs[job](self._session(), self.settings, batch)
                result_batch = getattr(result, "batch_id", batch.batch_id)
                if result_batch != batch.batch_id:
                    raise RuntimeError(f"{job} returned a result for batch {result_batch!r}, not {batch.batch_id!r}")
                return result.model_dump_json()
            except Exception as exc:
                log.exception("%s failed for batch %s", job, batch.batch_id)
                if _jvm_is_gone(exc):
                    self._discard_session()  # a new JVM on the next task
                return JOB_FAILED, exc

    def warm_up(self) -> None:
        """Build the SparkSession before the first task arrives (JVM start is the slow part),
        then run the warm-up batch if one is set (JIT and code generation of the job plans).

        Holds the run lock: a task arriving meanwhile waits (heartbeating) and runs warm.
        """
        with self._run_lock:
            try:
                spark = self._session()
            except Exception:  # the first task retries the build and reports the error
                log.exception("warming up the SparkSession failed")
                return
            if self._warmup_batch is None:
                return
            try:
                log.info("warm-up batch done in %.1f s", self._warmup_batch(spark, self.settings))
            except Exception as exc:  # best effort: the first real batch just runs cold
                log.warning("warm-up batch failed (the first batch will run cold): %s", failure_cause(exc)[:500])
                if _jvm_is_gone(exc):
                    self._discard_session()

    def _session(self) -> Any:
        # Called under _run_lock; a failed build leaves None so the next task tries again.
        if self._spark is None:
            log.info("building the SparkSession (%s)", self.settings.spark_master)
            self._spark = self._spark_factory()
        return self._spark

    def _discard_session(self) -> None:
        if self._spark_factory == self._build_spark:
            from spark.jobs.session import discard_session

            discard_session(self._spark)
        self._spark = None

    def _build_spark(self) -> Any:
        from spark.jobs.session import build_spark  # lazy: pyspark is only needed here

        return build_spark(self.settings, SPARK_APP_NAME)

    @contextmanager
    def _heartbeats(self, token: str, batch_key: tuple[str, str] | None = None) -> Iterator[None]:
        done = threading.Event()
        self._stamp(batch_key)  # picked up: the watchdog's clock restarts now
        thread = threading.Thread(
            target=self._heartbeat_loop, args=(token, done, batch_key), name="spark-runner-heartbeat", daemon=True
        )
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()  # no heartbeat may race the final SendTaskSuccess/Failure

    def _heartbeat_loop(self, token: str, done: threading.Event, batch_key: tuple[str, str] | None = None) -> None:
        while not done.wait(self.heartbeat_seconds):
            self.touch_liveness()  # a long job must not look like a dead container
            self._stamp(batch_key)
            try:
                self.sfn.send_task_heartbeat(taskToken=token)
            except Exception as exc:
                if error_code(exc) in _TASK_GONE_CODES:
                    log.warning("task is gone (%s); the job keeps running but its result will be dropped", exc)
                    return
                log.warning("heartbeat failed: %s", exc)

    def _stamp(self, batch_key: tuple[str, str] | None) -> None:
        """worker_heartbeat_at on the chunk: the emulator ignores SendTaskHeartbeat timeouts, so
        the controller's watchdog reads this instead (only while the chunk is processing)."""
        if self.batches is None or batch_key is None:
            return
        try:
            self.batches.stamp_worker_heartbeat(*batch_key)  # False (not processing): nothing to stamp
        except Exception as exc:  # a missed stamp only matters if every stamp is missed
            log.warning("could not stamp the batch's heartbeat: %s", exc)

    def _report(self, method: str, **kwargs: Any) -> None:
        try:
            getattr(self.sfn, method)(**kwargs)
        except Exception as exc:
            # Nothing to retry into: the execution has moved on (timed out) or SFN is unreachable,
            # in which case its heartbeat timeout and Retry take over.
            log.error("%s failed (%s): %s", method, error_code(exc) or type(exc).__name__, exc)

    def touch_liveness(self) -> None:
        self.liveness.touch()


# ---------------------------------------------------------------------- process entry


def _install_signal_handlers(runner: SparkRunner) -> None:
    """SIGTERM/SIGINT: stop gracefully; a second signal exits at once."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: Any) -> None:
        if runner.stopping:
            raise SystemExit(128 + signum)
        log.info("signal %d: finishing the current task, then exiting", signum)
        runner.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_forever(settings: Settings) -> None:
    """Run the spark-runner until SIGTERM/SIGINT (``cartflow serve spark-runner``)."""
    from cartflow.core.aws import AwsClients
    from cartflow.core.deps import Deps

    clients = AwsClients(settings)
    heartbeat = min(HEARTBEAT_SECONDS, settings.job_heartbeat_seconds / 4)
    batches = BatchTable(Deps(settings=settings, clients=clients))
    # The warm-up writes to the stack's bucket: only on an emulator (the local targets), on request.
    warmup = None
    if settings.aws_endpoint_url and settings.spark_warmup:
        from cartflow.local.spark_warmup import run_warmup_batch

        warmup = run_warmup_batch
    runner = SparkRunner(
        settings, clients.sfn, batches=batches, heartbeat_seconds=heartbeat, warmup_batch=warmup, poller=clients.sfn_poller
    )
    _install_signal_handlers(runner)
    threading.Thread(target=runner.warm_up, name="spark-warm-up", daemon=True).start()
    try:
        runner.run_forever()
    finally:
        runner.close()
    if runner.fatal_error:
        raise SystemExit(1)


def main() -> None:
    from cartflow.core.config import get_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(threadName)s] %(message)s")
    run_forever(get_settings())


if __name__ == "__main__":
    main()
