"""One Spark session (local[2], real Delta) for every in-process job test of the session.

Starting a JVM with Delta takes ~15 s on two cores; the job and corpus tests share it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cartflow.config import Settings
from tests.timings import TIMINGS


@pytest.fixture(scope="session")
def spark(base_settings: Settings) -> Iterator[Any]:
    pytest.importorskip("pyspark")
    from cartflow.jobs.session import build_spark

    session = build_spark(
        base_settings.model_copy(update={"spark_master": "local[2]", "spark_shuffle_partitions": 2}), "cartflow-jobs-tests"
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    print("\njob wall times (s): " + ", ".join(f"{k}: {sorted(round(t, 1) for t in v)}" for k, v in TIMINGS.items()))
