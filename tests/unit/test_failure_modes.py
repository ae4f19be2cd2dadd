"""Unreachable endpoint, missing resources, bad settings: one clear line, bounded retries with
backoff, exit 1 where a process cannot go on (stub clients, no emulator)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from pydantic import ValidationError
from typer.testing import CliRunner

from cartflow.core.config import Settings, get_settings
from cartflow.core.errors import InfraError, Needs, backoff_delays, check_ready, explain, is_fatal, retry_bounded
from cartflow.local import functions
from cartflow.local.emulator import free_port
from cartflow.local.sources import PollingSource

UNREACHABLE = f"http://127.0.0.1:{free_port()}"  # nothing listens on a port just freed


def client_error(code: str, message: str = "", op: str = "DescribeTable") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, op)


class Missing:
    """describe_table/get_queue_url/describe_activity stubs: names in ``gone`` do not exist."""

    def __init__(self, gone: set[str]) -> None:
        self.gone = gone
        self.dynamodb, self.sqs, self.sfn = self, self, self

    def _check(self, name: str, code: str) -> dict[str, Any]:
        if name in self.gone:
            raise client_error(code, "Requested resource not found")
        return {}

    def describe_table(self, TableName: str) -> dict[str, Any]:
        return self._check(TableName, "ResourceNotFoundException")

    def get_queue_url(self, QueueName: str) -> dict[str, Any]:
        return self._check(QueueName, "AWS.SimpleQueueService.NonExistentQueue")

    def describe_activity(self, activityArn: str) -> dict[str, Any]:
        return self._check(activityArn, "ActivityDoesNotExist")

    def describe_state_machine(self, stateMachineArn: str) -> dict[str, Any]:
        return self._check(stateMachineArn, "StateMachineDoesNotExist")


# ------------------------------------------------------------------------------ messages


def test_unreachable_endpoint_is_one_line_naming_it() -> None:
    line = explain(EndpointConnectionError(endpoint_url=UNREACHABLE), UNREACHABLE)
    assert line and UNREACHABLE in line and "cartflow up" in line and "\n" not in line
    assert not is_fatal(EndpointConnectionError(endpoint_url=UNREACHABLE))  # may come back


def test_missing_table_names_the_table_and_the_fix() -> None:
    exc = client_error("ResourceNotFoundException", "Requested resource not found: Table: cartflow-events not found")
    assert explain(exc, "http://e") == "table cartflow-events not found at http://e: run `cartflow resources apply`"
    assert is_fatal(exc)


def test_bad_settings_name_the_variable() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(bucket="Not_A_Bucket")
    line = explain(info.value)
    assert line and line.startswith("invalid configuration: CARTFLOW_BUCKET:") and "Not_A_Bucket" in line


def test_unknown_errors_are_not_explained_away() -> None:
    assert explain(ValueError("a bug")) is None
    assert explain(client_error("ThrottlingException")) is None and not is_fatal(client_error("ThrottlingException"))


# ------------------------------------------------------------------------------ preflight


def test_check_ready_lists_every_missing_resource() -> None:
    needs = Needs(tables=("t1", "t2"), queues=("q",), activities=("arn:a",))
    with pytest.raises(InfraError) as info:
        check_ready(None, Missing({"t2", "q"}), needs)
    assert str(info.value) == (
        "table t2, queue q not found at real AWS (neither CARTFLOW_AWS_ENDPOINT_URL nor AWS_ENDPOINT_URL is set): "
        "run `cartflow resources apply`"
    )
    check_ready(None, Missing(set()), needs)  # all there: no error


def test_check_ready_fails_fast_on_an_unreachable_endpoint() -> None:
    with pytest.raises(InfraError, match="cannot reach the AWS endpoint"):
        check_ready(UNREACHABLE, Missing(set()), Needs(tables=("t",)))


def test_retry_bounded_backs_off_exponentially_then_gives_up() -> None:
    waits: list[float] = []
    calls = 0

    def failing() -> None:
        nonlocal calls
        calls += 1
        raise InfraError("down")

    with pytest.raises(InfraError):
        retry_bounded(failing, attempts=5, base_s=0.5, max_s=3.0, sleep=waits.append)
    assert calls == 5 and waits == [0.5, 1.0, 2.0, 3.0] == backoff_delays(5, 0.5, 3.0)


def test_retry_bounded_returns_as_soon_as_it_works_and_skips_non_retryable() -> None:
    answers = iter([InfraError("starting"), "ok"])

    def flaky() -> str:
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    assert retry_bounded(flaky, sleep=lambda _: None) == "ok"
    with pytest.raises(ValueError):
        retry_bounded(lambda: (_ for _ in ()).throw(ValueError("bug")), retry_if=is_fatal, sleep=pytest.fail)


def test_serve_exits_1_with_one_line_when_preflight_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(aws_endpoint_url=UNREACHABLE, state_dir=tmp_path)
    monkeypatch.setattr(functions, "preflight", lambda name, s: check_ready(s.aws_endpoint_url, Missing(set()), Needs()))
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as info:
        functions.serve_forever("controller", settings)
    assert info.value.code == 1
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage().startswith("controller: cannot reach the AWS endpoint")


def test_preflight_checks_what_each_component_needs(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path)
    with pytest.raises(InfraError, match=f"table {s.idempotency_table}"):
        functions.preflight("ingest", s, Missing({s.idempotency_table}), attempts=2, sleep=lambda _: None)
    with pytest.raises(InfraError, match="activity"):
        functions.preflight("spark-runner", s, Missing({s.activity_arn(s.transform_activity)}), attempts=1)


# ------------------------------------------------------------------------------ run loops


class Failing(PollingSource):
    def __init__(self, settings: Settings, errors: list[Exception], **kw: Any) -> None:
        super().__init__("failing", settings, idle_wait_s=0.01, **kw)
        self.errors = errors
        self.polls = 0

    def poll_once(self) -> int:
        self.polls += 1
        if self.errors:
            raise self.errors.pop(0)
        return 0


class RecordingStop(threading.Event):
    """A stop event whose waits return at once but are recorded (and stop after ``limit``)."""

    def __init__(self, limit: int = 100) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.limit = limit

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        if len(self.waits) >= self.limit:
            self.set()
        return self.is_set()


def test_source_gives_up_on_a_missing_resource_after_bounded_backoff(tmp_path: Path) -> None:
    source = Failing(Settings(state_dir=tmp_path), [client_error("ResourceNotFoundException", "x")] * 10, max_fatal_errors=4)
    stop = RecordingStop()
    with pytest.raises(InfraError, match=r"giving up after 4 failed polls: .*cartflow resources apply"):
        source.run(stop)
    assert stop.waits == [0.5, 1.0, 2.0]  # exponential, and no busy loop


def test_source_rides_out_a_transient_outage_and_resets(tmp_path: Path) -> None:
    outage = [EndpointConnectionError(endpoint_url="http://x")] * 6
    source = Failing(Settings(state_dir=tmp_path), outage, max_error_backoff_s=4.0)
    stop = RecordingStop(limit=9)
    source.run(stop)  # stops via the limit, not by giving up
    assert stop.waits[:7] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 0.01] and source.polls >= 7  # then idle waits


def test_source_gives_up_when_the_outage_lasts_too_long(tmp_path: Path) -> None:
    source = Failing(Settings(state_dir=tmp_path), [EndpointConnectionError(endpoint_url="http://x")] * 5, max_outage_s=0.0)
    with pytest.raises(InfraError, match="cannot reach the AWS endpoint"):
        source.run(RecordingStop())


def test_spark_runner_stops_and_reports_when_its_activity_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cartflow.local import spark_runner

    class NoActivity:
        calls = 0

        def get_activity_task(self, **kw: Any) -> dict[str, Any]:
            NoActivity.calls += 1
            raise client_error("ActivityDoesNotExist", "Activity arn:x not found", "GetActivityTask")

    monkeypatch.setattr(spark_runner, "_ERROR_BACKOFF_SECONDS", 0.001)
    runner = spark_runner.SparkRunner(
        Settings(state_dir=tmp_path), NoActivity(), jobs={"validate": lambda *a: None}, arns={"validate": "arn:x"}
    )
    runner.start()
    assert runner.join(timeout=10), "pollers must end, not spin"
    assert NoActivity.calls == spark_runner.MAX_FATAL_POLL_ERRORS
    assert runner.fatal_error and "not found" in runner.fatal_error and "cartflow resources apply" in runner.fatal_error


# ------------------------------------------------------------------------------ CLI


def test_cli_commands_print_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    import typer

    from cartflow.cli.batches import batches_app
    from cartflow.cli.guard import guard_commands

    app = typer.Typer()
    app.add_typer(batches_app, name="batches")

    @app.command()
    def other() -> None:  # an existing command, guarded after the fact
        raise client_error("ResourceNotFoundException", "Requested resource not found: Table: OrderKPIs not found", "Scan")

    guard_commands(app)
    monkeypatch.setenv("CARTFLOW_AWS_ENDPOINT_URL", UNREACHABLE)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    get_settings.cache_clear()
    try:
        res = CliRunner().invoke(app, ["batches", "list"])
        assert res.exit_code == 1 and f"cannot reach the AWS endpoint {UNREACHABLE}" in res.output
        assert "Traceback" not in res.output
        res = CliRunner().invoke(app, ["other"])
        assert res.exit_code == 1 and "table OrderKPIs not found" in res.output and "cartflow resources apply" in res.output
        monkeypatch.setenv("CARTFLOW_BUCKET", "Bad_Bucket")
        get_settings.cache_clear()
        res = CliRunner().invoke(app, ["batches", "list"])
        assert res.exit_code == 2 and "CARTFLOW_BUCKET" in res.output  # a setting to fix: bad usage
    finally:
        get_settings.cache_clear()
