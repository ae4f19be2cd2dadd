"""One Spark session (local[2], real Delta) per test module for the in-process job tests.

Module scope, not session: Hadoop/S3A settings are fixed when the JVM starts, and other
modules (test_spark_s3a_delta) need a session built with their own endpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cartflow.core.config import Settings
from tests.timings import TIMINGS


@pytest.fixture(scope="module")
def spark(base_settings: Settings) -> Iterator[Any]:
    pytest.importorskip("pyspark")
    from spark.jobs.session import build_spark

    session = build_spark(
        base_settings.model_copy(update={"spark_master": "local[2]", "spark_shuffle_partitions": 2}), "cartflow-jobs-tests"
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    print("\njob wall times (s): " + ", ".join(f"{k}: {sorted(round(t, 1) for t in v)}" for k, v in TIMINGS.items()))
