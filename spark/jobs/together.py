"""Independent Spark actions of one job, run side by side.

A Delta write of a small table is mostly driver-side fixed cost (planning, log reads,
the commit, its checksum): running the writes of different tables on threads overlaps
those costs instead of adding them. Each thread inherits the caller's job group and
local properties, so Spark UI, listeners and the bench still attribute the jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from pyspark.sql import SparkSession
from pyspark.util import inheritable_thread_target


def run_together(spark: SparkSession, actions: Sequence[Callable[[], None]]) -> None:
    """Run every action; waits for all, then raises the first failure (in ``actions`` order)."""
    if len(actions) <= 1:
        for action in actions:
            action()
        return
    with ThreadPoolExecutor(max_workers=len(actions), thread_name_prefix="cartflow-action") as pool:
        inherit = inheritable_thread_target(spark)  # local properties (classic) or tags (Connect)
        futures = [pool.submit(inherit(action)) for action in actions]
    for future in futures:
        future.result()
