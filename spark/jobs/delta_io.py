"""Delta tables both jobs share: where they live, reading one that may not exist yet, the session time zone."""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession

from cartflow.core.models import BatchInput
from spark.jobs.session import to_spark_uri
from spark.jobs.storage import join_uri

log = logging.getLogger(__name__)


def dataset_uri(warehouse: str, prefix: str, dataset: str) -> str:
    return join_uri(warehouse, prefix, dataset)


def default_warehouse(batch: BatchInput) -> str:
    return f"s3a://{batch.bucket}"


def require_utc(spark: SparkSession) -> None:
    """Timestamps without an offset and DATE(created_at) must mean UTC, whatever the host says."""
    if spark.conf.get("spark.sql.session.timeZone") != "UTC":
        log.warning("spark.sql.session.timeZone was not UTC; setting it for this job")
        spark.conf.set("spark.sql.session.timeZone", "UTC")


def read_delta_if_exists(spark: SparkSession, uri: str) -> DataFrame | None:
    from delta.tables import DeltaTable  # delta-spark's Python API; the jar comes with the session

    spark_uri = to_spark_uri(uri)
    if not DeltaTable.isDeltaTable(spark, spark_uri):
        return None
    return spark.read.format("delta").load(spark_uri)
