"""A warm-up batch the spark-runner runs right after building its SparkSession.

The first batch of a fresh JVM pays for class loading, JIT compilation and Spark's code
generation of every plan (measured: ~25 s more than the same batch on a warm session,
docs/benchmarks.md). Running one small generated batch of both shapes through the real
jobs before the first task arrives moves that cost to the runner's start.

It runs against the stack's own bucket (so S3A and, in compose, the executors are warmed
too) under a scratch prefix no part of the pipeline reads: the bucket notification only
covers ``raw/`` and the warehouse of the warm-up is its own. Its KPIs go nowhere. The
prefix is emptied before and after, so a crash leaves at most one small batch behind.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cartflow.core.aws import AwsClients
from cartflow.core.config import Settings
from cartflow.core.models import BatchInput
from cartflow.local.fixturegen import Shape, generate

log = logging.getLogger("cartflow.spark_runner")

WARMUP_PREFIX = "spark-runner-warmup/"
WARMUP_ROWS = 2_000  # per shape: enough for every code path, ~1 s of work once warm
SHAPES: tuple[Shape, ...] = ("order_lines", "tables")  # both shapes: both KPI paths get compiled


class _DiscardSink:
    """KpiSink that keeps nothing: the warm-up's KPIs are not anyone's KPIs."""

    def write(self, rows: Any, batch_id: str) -> None:
        return None


def run_warmup_batch(spark: Any, settings: Settings, rows: int = WARMUP_ROWS) -> float:
    """Validate + transform one generated batch (flat and three-table shapes); seconds taken."""
    from spark.jobs.transform import run_transform  # lazy: pyspark only where Spark runs
    from spark.jobs.validation import run_validation

    started = time.monotonic()
    s3 = AwsClients(settings).s3
    bucket = settings.bucket
    _empty_prefix(s3, bucket)
    try:
        paths: dict[str, list[str]] = {}
        with tempfile.TemporaryDirectory(prefix="cartflow-warmup-") as tmp:
            for shape in SHAPES:
                generated = generate(shape, rows, Path(tmp) / shape, invalid_fraction=0.01)
                for data_type, files in generated.items():
                    for path in files:
                        key = f"{WARMUP_PREFIX}raw/{data_type}/{path.name}"
                        s3.upload_file(str(path), bucket, key)
                        paths.setdefault(f"{data_type}_paths", []).append(f"s3://{bucket}/{key}")
        now = datetime.now(UTC)
        batch = BatchInput(
            batch_id=f"warmup-{now:%Y%m%dT%H%M%S}",
            group_key="spark-runner-warmup",
            bucket=bucket,
            processing_date=now.date().isoformat(),
            archive=[],
            **paths,  # type: ignore[arg-type]
        )
        warehouse = f"s3a://{bucket}/{WARMUP_PREFIX}warehouse"
        # Generated bad rows must never fail the warm-up.
        lenient = settings.model_copy(update={"max_quarantined_share": 1.0})
        run_validation(spark, lenient, batch, warehouse)
        run_transform(spark, lenient, batch, warehouse, sink=_DiscardSink())
    finally:
        _empty_prefix(s3, bucket)
        # Give the warm-up's heap back while idle: G1 may uncommit heap after a full GC.
        with contextlib.suppress(Exception):  # never mask the warm-up's own error
            spark.catalog.clearCache()
            spark._jvm.java.lang.System.gc()
    return time.monotonic() - started


def _empty_prefix(s3: Any, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=WARMUP_PREFIX):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
