"""Shuffle partitions fitted to a job's input: fewer tasks for small batches, never above the setting."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from cartflow.core.config import Settings
from spark.jobs.session import SHUFFLE_CSV_BYTES, fit_shuffle_partitions

MB = 1 << 20


class _Conf:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def set(self, key: str, value: str) -> None:
        self.values[key] = value


@pytest.mark.parametrize(
    ("cores", "ceiling", "input_mb", "expected"),
    [
        (2, 4, 7, 2),  # 100k rows: one partition's worth, rounded up to the cores
        (2, 4, 0, 2),  # nothing accepted
        (2, 4, 68, 4),  # 3 wanted -> a whole multiple of 2 cores
        (2, 4, 136, 4),  # capped by the setting
        (2, 4, 700, 4),
        (8, 64, 700, 24),  # 22 wanted -> 3 waves of 8
        (1, 4, 40, 2),
    ],
)
def test_partitions_follow_input_size_in_whole_waves_of_cores(cores: int, ceiling: int, input_mb: int, expected: int) -> None:
    conf = _Conf()
    spark = SimpleNamespace(sparkContext=SimpleNamespace(defaultParallelism=cores), conf=conf)
    got = fit_shuffle_partitions(spark, Settings(spark_shuffle_partitions=ceiling), input_mb * MB, SHUFFLE_CSV_BYTES)  # type: ignore[arg-type]
    assert got == expected
    assert conf.values == {"spark.sql.shuffle.partitions": str(expected)}
