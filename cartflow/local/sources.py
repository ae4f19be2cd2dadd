"""What every local event source shares: the run loop, liveness, and batch-failure rules.

The concrete sources live in ``sqs_source``, ``stream_source`` and ``schedule_source``.
Each has ``poll_once() -> int`` (one unit of work, returns how many records or messages it
handed to the handler; tests call it directly) and ``run(stop)`` (the loop a process runs).
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from cartflow.config import Settings
from cartflow.local.liveness import Liveness

log = logging.getLogger(__name__)


class PollingSource(ABC):
    """Base run loop: touch liveness, poll, wait when idle, back off on infrastructure errors."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        *,
        idle_wait_s: float,
        max_error_backoff_s: float = 30.0,
    ) -> None:
        self.name = name
        self.settings = settings
        self.idle_wait_s = idle_wait_s
        self.max_error_backoff_s = max_error_backoff_s
        self.liveness = Liveness(settings, name)

    @abstractmethod
    def poll_once(self) -> int:
        """Do one unit of work; return the number of records/messages handed to the handler."""

    def run(self, stop: threading.Event) -> None:
        log.info("%s: started", self.name)
        errors = 0
        while not stop.is_set():
            self.liveness.touch()
            try:
                delivered = self.poll_once()
                errors = 0
            except Exception:
                # Emulator down, queue/table not created yet, throttling: all transient for a
                # long-running runner, so log and retry rather than exit.
                errors += 1
                delay = min(self.max_error_backoff_s, 0.5 * 2 ** min(errors - 1, 10))
                log.exception("%s: poll failed (%d in a row); retrying in %.1fs", self.name, errors, delay)
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
