"""The keys a reference column may point to: this batch's valid rows and the validated table."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cartflow.core.models import VALIDATED_PREFIX, BatchInput
from spark.jobs.contracts import Contract
from spark.jobs.delta_io import dataset_uri, read_delta_if_exists
from spark.jobs.frames import local_frame
from spark.jobs.validation.columns import BATCH_ID, ERRORS

SPARK_TYPES: dict[str, T.DataType] = {
    "string": T.StringType(),
    "int": T.IntegerType(),
    "long": T.LongType(),
    "double": T.DoubleType(),
    "date": T.DateType(),
    "timestamp": T.TimestampType(),
    "boolean": T.BooleanType(),
}


def referenceable_keys(
    spark: SparkSession,
    warehouse: str,
    target: Contract,
    target_checked: DataFrame | None,
    batch: BatchInput,
) -> DataFrame:
    """Keys a reference may point to: this batch's valid target rows UNION the validated table.

    The validated table's rows of *this* batch are skipped: a replay replaces them, and the
    batch's own valid rows are already in the union.
    """
    (key,) = target.key
    key_type = SPARK_TYPES[target.column(key).type]
    parts: list[DataFrame] = []
    if target_checked is not None:
        parts.append(target_checked.where(F.size(ERRORS) == 0).select(key))
    existing = read_delta_if_exists(spark, dataset_uri(warehouse, VALIDATED_PREFIX, target.dataset))
    if existing is not None:
        parts.append(existing.where(F.col(BATCH_ID) != batch.batch_id).select(key))
    if not parts:
        return local_frame(spark, [], T.StructType([T.StructField(key, key_type)]))
    keys = parts[0]
    for part in parts[1:]:
        keys = keys.unionByName(part)
    return keys
