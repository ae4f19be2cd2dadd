"""Reading the accepted raw files of one dataset as strings, each with a schema from its own header."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark.jobs.contracts import Contract
from spark.jobs.session import to_spark_uri
from spark.jobs.validation.columns import _CORRUPT, _PID, _POS, RAW_RECORD, SOURCE_FILE
from spark.jobs.validation.files import SourceFile


def read_raw(spark: SparkSession, contract: Contract, files: Sequence[SourceFile]) -> DataFrame:
    """All files of one dataset as raw strings: contract columns, raw_record, source_file, position."""
    frames = [_read_one_file(spark, contract, f) for f in files]
    combined = frames[0]
    for frame in frames[1:]:
        combined = combined.unionByName(frame)
    return combined


def _read_one_file(spark: SparkSession, contract: Contract, source: SourceFile) -> DataFrame:
    header = source.inspection.header
    # Positional names: the header may hold names Spark would misparse (dots, spaces).
    positional = [f"_c{i}" for i in range(len(header))]
    schema = T.StructType(
        [T.StructField(name, T.StringType()) for name in positional] + [T.StructField(_CORRUPT, T.StringType())]
    )
    frame = spark.read.csv(
        to_spark_uri(source.location),
        schema=schema,
        header=True,
        enforceSchema=True,  # the schema *is* the header, positionally
        mode="PERMISSIVE",
        columnNameOfCorruptRecord=_CORRUPT,
        encoding="UTF-8",
        escape='"',  # RFC 4180: a quote inside a quoted field is doubled
        # Only a file with a quoted line break needs the (unsplittable) multi-line parser.
        multiLine=source.inspection.multiline,
    )
    position = {name: i for i, name in enumerate(header)}
    return frame.select(
        *[F.col(positional[position[c]]).alias(c) for c in contract.column_names],
        F.col(_CORRUPT).alias(RAW_RECORD),
        F.lit(source.uri).alias(SOURCE_FILE),
        # Where the row sits in the file: the split (a file's splits are read in order) and
        # the row's place in it. Evaluated at the scan, before any shuffle; see LineNumbers (lines.py).
        F.spark_partition_id().alias(_PID),
        F.monotonically_increasing_id().alias(_POS),
    )
