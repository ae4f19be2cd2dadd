"""Small DataFrames from driver-side values, built in the JVM.

``spark.createDataFrame(list, schema)`` ships the rows through an RDD of pickles, which
starts Python worker processes (pyspark.daemon) for a handful of rows. Literal rows
become a LocalTableScan instead: no worker, no extra Spark job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T


def local_frame(spark: SparkSession, rows: Sequence[Sequence[Any]], schema: T.StructType) -> DataFrame:
    """``rows`` (tuples in ``schema`` order) as a DataFrame of exactly ``schema``."""
    if not rows:
        return spark.range(0).select(*[F.lit(None).cast(f.dataType).alias(f.name) for f in schema.fields])
    structs = [
        F.struct(*[F.lit(value).cast(f.dataType).alias(f.name) for f, value in zip(schema.fields, row, strict=True)])
        for row in rows
    ]
    return (
        spark.range(1)
        .select(F.inline(F.array(*structs)))
        .select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
    )
