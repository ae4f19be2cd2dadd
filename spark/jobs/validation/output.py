"""What the job writes: valid rows to validated/, the others to quarantine/, file outcomes to file_registry/.

Every write replaces only this batch's rows, so a replay leaves other batches untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from functools import partial

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cartflow.core.models import BATCH_ID_RE, FILE_REGISTRY_PREFIX, QUARANTINE_PREFIX, VALIDATED_PREFIX, BatchInput, FileOutcome
from spark.jobs.contracts import Contract
from spark.jobs.delta_io import dataset_uri
from spark.jobs.frames import local_frame
from spark.jobs.session import to_spark_uri
from spark.jobs.storage import join_uri
from spark.jobs.together import run_together
from spark.jobs.validation.columns import (
    _RAW,
    BATCH_ID,
    ERRORS,
    LINE_NUMBER,
    PROCESSING_DATE,
    RAW_RECORD,
    REASON,
    REASONS,
    RECORD_NUMBER,
    SOURCE_FILE,
)
from spark.jobs.validation.counts import Counts
from spark.jobs.validation.files import Structure
from spark.jobs.validation.lines import LineNumbers


def write_tables(
    spark: SparkSession,
    checked: dict[str, DataFrame],
    contracts: dict[str, Contract],
    structure: Structure,
    counts: Counts,
    batch: BatchInput,
    warehouse: str,
    *,
    first_write: bool = False,
) -> None:
    """Replace the batch's rows in every table; ``first_write``: none exist yet, append them.

    Appending needs no file list, so Delta skips the state reconstruction (log replay) that
    replaceWhere needs for every table on a lake with history. It is only safe while the
    registry is committed first: a run that fails after it is retried in replace mode.
    """
    lines = LineNumbers(
        offsets=counts.split_offsets(),
        shifts={s.uri: s.inspection.line_shifts for files in structure.accepted.values() for s in files},
    )
    # A backfill also replaces the rows of the batches it re-runs (BatchInput.replaces).
    owners = [batch.batch_id, *batch.replaces]
    # Every table is written by its own thread: each write is mostly fixed driver-side cost.
    writes = []
    for dataset, frame in checked.items():
        contract = contracts[dataset]
        writes.append(
            partial(
                replace_batch_rows,
                valid_rows(frame, contract, batch),
                dataset_uri(warehouse, VALIDATED_PREFIX, dataset),
                owners,
                append=first_write,
            )
        )
        writes.append(
            partial(
                replace_batch_rows,
                quarantined_rows(frame, contract, batch, lines),
                dataset_uri(warehouse, QUARANTINE_PREFIX, dataset),
                owners,
                append=first_write,
            )
        )
    register = partial(
        replace_batch_rows,
        registry_frame(spark, list(structure.outcomes.values()), batch),
        join_uri(warehouse, FILE_REGISTRY_PREFIX),
        owners,
        partition_by=None,
        # A backfill of one dataset keeps its originals' registry rows of the others.
        datasets=sorted({o.dataset for o in structure.outcomes.values()}) if batch.replaces else None,
        append=first_write,
    )
    if first_write:
        register()  # before the appends: what read_registry relies on
        run_together(spark, writes)
    else:
        run_together(spark, [*writes, register])


def valid_rows(checked: DataFrame, contract: Contract, batch: BatchInput) -> DataFrame:
    return checked.where(F.size(ERRORS) == 0).select(*[F.col(c) for c in contract.column_names], *_lineage_columns(batch))


def quarantined_rows(checked: DataFrame, contract: Contract, batch: BatchInput, lines: LineNumbers) -> DataFrame:
    messages = F.transform(F.col(ERRORS), lambda e: e["message"])
    record = lines.record_index()
    return checked.where(F.size(ERRORS) > 0).select(
        *[F.col(f"{_RAW}.{c}").alias(c) for c in contract.column_names],
        F.col(RAW_RECORD),
        F.transform(
            F.col(ERRORS),
            lambda e: F.struct(e["rule"].alias("rule"), e["column"].alias("column"), e["value"].alias("value")),
        ).alias(ERRORS),
        messages.alias(REASONS),
        F.array_join(messages, "; ").alias(REASON),
        (record + 1).alias(RECORD_NUMBER),
        lines.line_number(record).alias(LINE_NUMBER),
        *_lineage_columns(batch),
    )


def _lineage_columns(batch: BatchInput) -> list[SparkColumn]:
    return [
        F.lit(batch.batch_id).alias(BATCH_ID),
        F.lit(date.fromisoformat(batch.processing_date)).alias(PROCESSING_DATE),
        F.col(SOURCE_FILE),
    ]


def replace_batch_rows(
    frame: DataFrame,
    uri: str,
    batch_ids: str | Sequence[str],
    partition_by: str | None = PROCESSING_DATE,
    datasets: Sequence[str] | None = None,
    append: bool = False,
) -> None:
    """Overwrite only these batches' rows (of these datasets, if given); creates the table on first write.

    ``append``: the caller knows the table holds none of these rows; add them without a replace.
    """
    ids = [batch_ids] if isinstance(batch_ids, str) else list(batch_ids)
    if not all(BATCH_ID_RE.match(b) for b in [*ids, *(datasets or [])]):
        raise ValueError(f"not batch ids / dataset names: {ids!r} {datasets!r}")
    owned = ", ".join(f"'{b}'" for b in ids)  # [A-Za-z0-9_-] only: nothing to escape
    where = f"{BATCH_ID} IN ({owned})"
    if datasets:
        where += " AND dataset IN (" + ", ".join(f"'{d}'" for d in datasets) + ")"
    writer = frame.write.format("delta").option("mergeSchema", "true")  # tables of an older version gain new columns
    if append:
        # An idempotent write (Delta's transaction ids): a second run of the same batch that
        # also saw no registry row (two runs at once) skips its append instead of doubling rows.
        writer = writer.mode("append").option("txnAppId", f"cartflow-{ids[0]}").option("txnVersion", "0")
    else:
        writer = writer.mode("overwrite").option("replaceWhere", where)
    if partition_by:
        writer = writer.partitionBy(partition_by)
    writer.save(to_spark_uri(uri))


def registry_frame(spark: SparkSession, outcomes: Sequence[FileOutcome], batch: BatchInput) -> DataFrame:
    schema = T.StructType(
        [
            T.StructField(BATCH_ID, T.StringType()),
            T.StructField(PROCESSING_DATE, T.DateType()),
            T.StructField(SOURCE_FILE, T.StringType()),
            T.StructField("dataset", T.StringType()),
            T.StructField("status", T.StringType()),
            T.StructField(REASON, T.StringType()),
            T.StructField("sha256", T.StringType()),
            T.StructField("size", T.LongType()),
            T.StructField("rows", T.LongType()),
            T.StructField("valid_rows", T.LongType()),
            T.StructField("quarantined_rows", T.LongType()),
        ]
    )
    day = date.fromisoformat(batch.processing_date)
    rows = [
        (batch.batch_id, day, o.uri, o.dataset, o.status, o.reason, o.sha256, o.size, o.rows, o.valid_rows, o.quarantined_rows)
        for o in outcomes
    ]
    return local_frame(spark, rows, schema)  # no Python workers for a few metadata rows
