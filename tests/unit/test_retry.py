"""The one retry helper (cartflow.core.retry): bounded attempts, capped and jittered waits,
non-retryable errors at once; and the loops that take their waits from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cartflow.core.config import Settings
from cartflow.core.retry import DEFAULT_JITTER, Backoff, backoff_delays, retry
from cartflow.local.sources import PollingSource
from tests.unit.test_failure_modes import RecordingStop


class Boom(Exception):
    pass


def always_failing(calls: list[int]) -> Any:
    def fn() -> None:
        calls.append(1)
        raise Boom(f"try {len(calls)}")

    return fn


# ------------------------------------------------------------------------------ Backoff


def test_caps_double_from_the_base_up_to_the_max() -> None:
    b = Backoff(0.5, 4.0)
    assert [b.cap(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff_delays(5, 0.5, 3.0) == [0.5, 1.0, 2.0, 3.0]


def test_delays_stay_within_bounds_and_are_jittered() -> None:
    b = Backoff(0.5, 30.0, jitter=DEFAULT_JITTER)
    for n in range(1, 12):
        cap = b.cap(n)
        draws = [b.delay(n) for _ in range(200)]
        assert all(cap * (1 - DEFAULT_JITTER) <= d <= cap for d in draws), n
        assert len(set(draws)) > 100, "the waits must vary (jitter), not repeat the schedule"


def test_jitter_is_the_random_share_of_the_cap() -> None:
    b = Backoff(1.0, 60.0, jitter=0.5)
    assert b.delay(3, rand=lambda: 0.0) == 4.0  # never longer than the plain schedule
    assert b.delay(3, rand=lambda: 1.0) == 2.0  # never shorter than half of it
    assert Backoff(1.0, 60.0, jitter=1.0).delay(3, rand=lambda: 0.999) == pytest.approx(0.004)  # full jitter
    assert [Backoff(1.0, 60.0, jitter=0.0).delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]  # none: exact


def test_a_days_long_outage_neither_overflows_nor_exceeds_the_max() -> None:
    assert Backoff(0.5, 30.0).delay(100_000) <= 30.0


def test_jitter_outside_0_1_is_rejected() -> None:
    with pytest.raises(ValueError, match="jitter"):
        Backoff(1.0, 2.0, jitter=1.5)


# ------------------------------------------------------------------------------ retry


def test_attempts_are_bounded_and_the_last_error_propagates() -> None:
    calls: list[int] = []
    waits: list[float] = []
    b = Backoff(0.5, 3.0)
    with pytest.raises(Boom, match="try 5"):
        retry(always_failing(calls), attempts=5, backoff=b, sleep=waits.append)
    assert len(calls) == 5 and len(waits) == 4
    assert all(b.cap(n) * (1 - b.jitter) <= w <= b.cap(n) for n, w in enumerate(waits, start=1))


def test_non_retryable_errors_are_raised_at_once() -> None:
    calls: list[int] = []
    with pytest.raises(Boom):
        retry(always_failing(calls), attempts=5, backoff=Backoff(1.0, 8.0), retry_if=lambda e: False, sleep=pytest.fail)
    assert calls == [1]


def test_returns_as_soon_as_a_try_works_and_reports_each_retry() -> None:
    answers = iter([Boom("1"), Boom("2"), "ok"])
    seen: list[tuple[str, int]] = []

    def flaky() -> str:
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    result = retry(
        flaky, attempts=6, backoff=Backoff(0.1, 1.0), on_retry=lambda e, n, w: seen.append((str(e), n)), sleep=lambda _: None
    )
    assert result == "ok" and seen == [("1", 1), ("2", 2)]


def test_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="attempts"):
        retry(lambda: None, attempts=0, backoff=Backoff(1.0, 1.0))


def test_the_default_sleep_is_looked_up_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    with pytest.raises(Boom):
        retry(always_failing([]), attempts=2, backoff=Backoff(1.0, 1.0, jitter=0.0))
    assert waits == [1.0]


# ------------------------------------------------------------------------------ users


class _Failing(PollingSource):
    def __init__(self, settings: Settings, **kw: Any) -> None:
        super().__init__("failing", settings, idle_wait_s=0.01, **kw)

    def poll_once(self) -> int:
        raise ConnectionError("emulator restarting")


def test_event_source_error_waits_are_jittered_within_the_schedule(tmp_path: Path) -> None:
    source = _Failing(Settings(state_dir=tmp_path), max_error_backoff_s=4.0, error_jitter=DEFAULT_JITTER)
    stop = RecordingStop(limit=8)
    source.run(stop)
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(cap / 2 <= w <= cap for w, cap in zip(stop.waits, caps, strict=True))
    assert stop.waits != caps


def test_the_concrete_sources_and_the_preflight_use_jitter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cartflow.local import functions
    from cartflow.local.lambda_context import LocalFunction
    from cartflow.local.schedule_source import ScheduleSource

    settings = Settings(state_dir=tmp_path)
    source = ScheduleSource(LocalFunction("f", lambda e, c: None, settings), settings, interval_s=1.0)
    assert source.error_jitter == DEFAULT_JITTER

    seen: dict[str, Any] = {}
    monkeypatch.setattr(functions, "retry_bounded", lambda fn, **kw: seen.update(kw))
    functions.preflight("ingest", settings, clients=object())  # type: ignore[arg-type]
    assert seen["jitter"] == DEFAULT_JITTER
