"""What every local event source shares: the run loop, liveness, and batch-failure rules.

The concrete sources live in ``sqs_source``, ``stream_source`` and ``schedule_source``.
Each has ``poll_once() -> int`` (one unit of work, returns how many records or messages it
handed to the handler; tests call it directly) and ``run(stop)`` (the loop a process runs).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from cartflow.core.config import Settings
from cartflow.core.errors import InfraError, explain, is_fatal
from cartflow.core.retry import Backoff
from cartflow.local.liveness import Liveness

log = logging.getLogger(__name__)


class PollingSource(ABC):
    """Base run loop: touch liveness, poll, wait when idle, back off on infrastructure errors.

    Errors are retried with exponential backoff, but not forever: ``max_fatal_errors`` polls
    in a row failing on something waiting cannot fix (a missing queue/table, bad
    credentials), or ``max_outage_s`` of nothing but failures (endpoint unreachable), end
    ``run`` with InfraError so the process exits non-zero and its supervisor (compose
    restart policy, the embedded stack's check_alive) sees it, instead of a runner that
    looks alive and does nothing.

    ``error_jitter`` is the random share of each error wait (cartflow.core.retry): the
    concrete sources pass DEFAULT_JITTER so runners hit by one outage do not retry in
    lockstep; 0 keeps the exact 0.5, 1, 2, ... schedule.
    """

    def __init__(
        self,
        name: str,
        settings: Settings,
        *,
        idle_wait_s: float,
        max_error_backoff_s: float = 30.0,
        max_fatal_errors: int = 5,
        max_outage_s: float = 300.0,
        error_jitter: float = 0.0,
    ) -> None:
        self.name = name
        self.settings = settings
        self.idle_wait_s = idle_wait_s
        self.max_error_backoff_s = max_error_backoff_s
        self.error_jitter = error_jitter
        self.max_fatal_errors = max_fatal_errors
        self.max_outage_s = max_outage_s
        self.liveness = Liveness(settings, name)

    @abstractmethod
    def poll_once(self) -> int:
        """Do one unit of work; return the number of records/messages handed to the handler."""

    def run(self, stop: threading.Event) -> None:
        log.info("%s: started", self.name)
        errors = fatal = 0
        first_error_at = 0.0
        while not stop.is_set():
            self.liveness.touch()
            try:
                delivered = self.poll_once()
                errors = fatal = 0
            except Exception as exc:
                # Emulator restarting, throttling: transient, so back off and retry.
                errors += 1
                fatal = fatal + 1 if is_fatal(exc) else 0
                now = time.monotonic()
                first_error_at = now if errors == 1 else first_error_at
                line = explain(exc, self.settings.aws_endpoint_url)
                if fatal >= self.max_fatal_errors or now - first_error_at >= self.max_outage_s:
                    raise InfraError(f"{self.name}: giving up after {errors} failed polls: {line or exc}") from exc
                delay = Backoff(0.5, self.max_error_backoff_s, self.error_jitter).delay(errors)
                if errors == 1 and line is None:
                    log.exception("%s: poll failed; retrying in %.1fs", self.name, delay)
                else:  # known cause, or already logged with its traceback: one line each
                    log.error("%s: poll failed (%d in a row): %s; retrying in %.1fs", self.name, errors, line or exc, delay)
                stop.wait(delay)
                continue
            if delivered == 0 and self.idle_wait_s > 0:
                stop.wait(self.idle_wait_s)
        log.info("%s: stopped", self.name)


def failed_item_ids(response: Any, batch_ids: Sequence[str], *, source: str) -> set[str]:
    """Which items of a batch failed, read from a handler's ``ReportBatchItemFailures`` response.

    Follows Lambda's documented rules: ``None``, a response without ``batchItemFailures``, or
    a null/empty list means complete success; an entry whose ``itemIdentifier`` is missing,
    empty, not a string or not in the batch makes the *whole* batch a failure (Lambda cannot
    tell what succeeded, so it retries everything).
    """
    if not isinstance(response, dict):
        return set()
    failures = response.get("batchItemFailures")
    if not failures:
        return set()
    known = set(batch_ids)
    if not isinstance(failures, list):
        log.warning("%s: batchItemFailures is not a list (%r): whole batch failed", source, failures)
        return known
    failed: set[str] = set()
    for entry in failures:
        item = entry.get("itemIdentifier") if isinstance(entry, dict) else None
        if not isinstance(item, str) or item not in known:
            log.warning("%s: invalid batchItemFailures entry %r: whole batch failed", source, entry)
            return known
        failed.add(item)
    return failed
