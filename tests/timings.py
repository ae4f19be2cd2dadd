"""Wall times of the Spark jobs run in-process by the tests, printed when the session ends."""

from __future__ import annotations

from collections import defaultdict

TIMINGS: dict[str, list[float]] = defaultdict(list)
