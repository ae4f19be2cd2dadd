"""Small DataFrames from driver-side values, built in the JVM.

``spark.createDataFrame(list, schema)`` ships the rows through an RDD of pickles, which
starts Python worker processes (pyspark.daemon) for a handful of rows. Here the rows are
one literal expanded in the JVM instead: no worker, no extra Spark job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T


def local_frame(spark: SparkSession, rows: Sequence[Sequence[Any]], schema: T.StructType) -> DataFrame:
    """``rows`` (tuples in ``schema`` order) as a DataFrame of exactly ``schema``.

    The rows travel as ONE JSON literal of strings, parsed and cast in the JVM: a literal
    (and its cast) per value cost several Py4J round trips each, thousands for a batch's KPI
    rows (docs/benchmarks.md). Strings cast exactly: decimals, dates, longs, booleans.
    """
    if not rows:
        return spark.range(0).select(*[F.lit(None).cast(f.dataType).alias(f.name) for f in schema.fields])
    names = [f.name for f in schema.fields]
    payload = json.dumps([dict(zip(names, map(_as_text, row), strict=True)) for row in rows])
    as_text = T.ArrayType(T.StructType([T.StructField(name, T.StringType()) for name in names]))
    return (
        spark.range(1)
        .select(F.inline(F.from_json(F.lit(payload), as_text)))
        .select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields])
    )


def _as_text(value: Any) -> str | None:
    """A value as the string Spark's cast reads back to the same value (None stays null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):  # date, datetime
        return str(value.isoformat())
    return str(value)  # int, Decimal (exact), str; float: repr round-trips
