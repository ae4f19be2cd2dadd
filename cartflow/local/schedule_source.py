"""EventBridge Scheduler -> handler: call the function every ``interval_s`` seconds.

Ticks are laid on a fixed grid (start + k * interval) so a slow handler or a slow loop does
not make the schedule drift. If the handler overruns, the overdue tick fires at once and any
further missed ticks are skipped rather than fired in a burst. A handler exception is
logged and the next tick fires as usual.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from cartflow.core.config import Settings
from cartflow.core.retry import DEFAULT_JITTER
from cartflow.local.lambda_context import LocalFunction
from cartflow.local.sources import PollingSource

log = logging.getLogger(__name__)


def scheduler_event(*, schedule_arn: str, when: datetime, settings: Settings) -> dict[str, Any]:
    """The event a scheduled Lambda target receives (``time`` is the scheduled time, UTC, seconds)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": settings.account_id,
        "time": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": settings.region,
        "resources": [schedule_arn],
        "detail": {},
    }


class ScheduleSource(PollingSource):
    """Calls ``function`` every ``interval_s`` seconds; the first call is one interval after start
    unless ``fire_immediately``. ``schedule_name`` goes into the schedule ARN (default group)."""

    def __init__(
        self,
        function: LocalFunction,
        settings: Settings,
        *,
        interval_s: float,
        schedule_name: str | None = None,
        fire_immediately: bool = False,
        name: str | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        super().__init__(name or function.name, settings, idle_wait_s=interval_s, error_jitter=DEFAULT_JITTER)
        self.function = function
        self.interval_s = interval_s
        self.fire_immediately = fire_immediately
        self.schedule_arn = settings.arn("scheduler", f"schedule/default/{schedule_name or function.name}")

    def poll_once(self) -> int:
        """Fire one event now; 1 if the handler was called (even if it raised)."""
        self._fire(datetime.now(UTC))
        return 1

    def _fire(self, when: datetime) -> None:
        try:
            self.function.invoke(scheduler_event(schedule_arn=self.schedule_arn, when=when, settings=self.settings))
        except Exception:
            log.exception("%s: scheduled invocation failed; next tick fires as usual", self.name)

    def run(self, stop: threading.Event) -> None:
        log.info("%s: every %.3gs (%s)", self.name, self.interval_s, self.schedule_arn)
        start_mono, start_wall = time.monotonic(), datetime.now(UTC)
        tick = 0 if self.fire_immediately else 1
        while True:
            self.liveness.touch()
            due = start_mono + tick * self.interval_s
            # Wait in slices no longer than a minute so liveness stays fresh on long intervals.
            while (remaining := due - time.monotonic()) > 0:
                if stop.wait(min(remaining, 60.0)):
                    log.info("%s: stopped", self.name)
                    return
                self.liveness.touch()
            if stop.is_set():
                break
            self._fire(start_wall + timedelta(seconds=tick * self.interval_s))
            tick += 1
            # An overrun fires the overdue tick at once (AWS would have run it concurrently)
            # but drops any further ones, so a slow handler never causes a burst.
            skipped = math.floor((time.monotonic() - (start_mono + tick * self.interval_s)) / self.interval_s)
            if skipped > 0:
                log.warning("%s: handler overran; skipping %d tick(s)", self.name, skipped)
                tick += skipped
        log.info("%s: stopped", self.name)
