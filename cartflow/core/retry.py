"""Capped exponential backoff with jitter, and the bounded retry built on it.

Every retry loop of the project takes its waits from ``Backoff``: bounded call retries
(a process's preflight, a jar download) through ``retry``, and the loops that never give
up on their own (the local event sources, the spark-runner's pollers, a stream shard's
failing batch) through ``Backoff.delay``. Stdlib only: spark/fetch_jars.py uses it in a
bare image build stage, before the package and its dependencies are installed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

# The random share of each wait. With 0.5 a wait lands in [cap/2, cap]: processes that
# failed together (an emulator restart) spread out, no wait is longer than the plain
# schedule's, and none shrinks to a busy loop (full jitter, 1.0, can draw ~0).
DEFAULT_JITTER = 0.5
_MAX_DOUBLINGS = 30  # the cap is reached long before; keeps 2**n small in a days-long outage


@dataclass(frozen=True)
class Backoff:
    """Waits of base_s, 2*base_s, 4*base_s, ... capped at max_s, each shortened by a random
    share of at most ``jitter`` (0: exactly that schedule; 1: full jitter)."""

    base_s: float
    max_s: float
    jitter: float = DEFAULT_JITTER

    def __post_init__(self) -> None:
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"jitter must be within 0..1, got {self.jitter}")

    def cap(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (1 is the first retry)."""
        return min(self.max_s, self.base_s * 2 ** min(max(retry, 1) - 1, _MAX_DOUBLINGS))

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """The wait before retry number ``retry``: within [cap * (1 - jitter), cap]."""
        cap = self.cap(retry)
        return cap * (1.0 - self.jitter * rand())


def backoff_delays(attempts: int, base_s: float, max_s: float) -> list[float]:
    """The longest waits between ``attempts`` tries: base, 2*base, 4*base, ... capped at max_s."""
    schedule = Backoff(base_s, max_s, jitter=0.0)
    return [schedule.cap(n) for n in range(1, attempts)]


def retry(
    fn: Callable[[], T],
    *,
    attempts: int,
    backoff: Backoff,
    retry_if: Callable[[BaseException], bool] = lambda exc: True,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    sleep: Callable[[float], Any] | None = None,
) -> T:
    """``fn()`` with up to ``attempts`` tries; the last error, or one ``retry_if`` rejects, propagates.

    ``on_retry(exc, retry, wait)`` runs before each wait (to log it). ``sleep`` defaults to
    ``time.sleep``, looked up per call so a test that patches it is obeyed.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    for n in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if n == attempts or not retry_if(exc):
                raise
            wait = backoff.delay(n)
            if on_retry is not None:
                on_retry(exc, n, wait)
            (sleep or time.sleep)(wait)
    raise AssertionError("unreachable")  # pragma: no cover
