"""The VALIDATION job: raw CSVs of one batch -> Delta ``validated/`` + ``quarantine/`` tables.

Flow (few Spark actions: one aggregation for the result, then two Delta writes per dataset):
1. File checks without Spark (filecheck.py streams each file once): a file that is not a
   CSV of its dataset (encoding, BOM, binary, compressed, delimiter, header, no data,
   truncated) or repeats an accepted file byte for byte is REJECTED with one reason; the
   rest of the batch goes on.
2. Each accepted file is read with an all-string schema built from its own header
   (PERMISSIVE, with a corrupt-record column), so column order may differ between files.
3. Per row, every rule violation becomes an error {rule, column, value, message}; the rule
   wording comes from rules.py, shared with the plain-Python ``cartflow contracts check``.
4. One aggregation counts rows per file, split and rule. If the quarantined share is above
   ``max_quarantined_share`` the batch FAILS and nothing is written; otherwise valid rows go
   typed to ``validated/<dataset>``, the others raw to ``quarantine/<dataset>`` (with source
   file, line number and errors), both with replaceWhere on batch_id so a replay replaces
   only this batch's rows, and the file outcomes to ``file_registry/``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cartflow.core.config import Settings
from cartflow.core.models import (
    FILE_REGISTRY_PREFIX,
    QUARANTINE_PREFIX,
    RAW_PREFIX,
    REJECTED_PREFIX,
    VALIDATED_PREFIX,
    VALIDATION_OUTPUT_PREFIX,
    ArchiveItem,
    BatchInput,
    DataType,
    FileOutcome,
    TableResult,
    ValidationResult,
)
from spark.jobs import rules
from spark.jobs.contracts import Column, Contract, dependency_order, load_contracts
from spark.jobs.filecheck import FileInspection, inspect_file
from spark.jobs.rowcheck import duplicate_file_reason
from spark.jobs.session import SHUFFLE_CSV_BYTES, fit_shuffle_partitions, to_spark_uri
from spark.jobs.storage import Storage, as_s3_uri, join_uri

log = logging.getLogger(__name__)

# Column names the job adds; contract columns are lower_snake_case without a leading "_".
BATCH_ID = "batch_id"
PROCESSING_DATE = "processing_date"
SOURCE_FILE = "source_file"
RAW_RECORD = "raw_record"  # the unparsed line of a malformed row
ERRORS = "errors"  # array<struct<rule, column, value>> in quarantine/
REASONS = "reasons"  # the errors' messages
REASON = "reason"  # the messages joined with "; "
LINE_NUMBER = "line_number"  # physical line where the row starts (header = 1)
RECORD_NUMBER = "record_number"  # 1-based data record of the file
_CORRUPT = "_corrupt_record"
_RAW = "_raw"  # struct of the raw (string) contract columns while checking
_PID = "_split"
_POS = "_pos"

MISSING_FILE = "file does not exist (deleted after upload?)"

SPARK_TYPES: dict[str, T.DataType] = {
    "string": T.StringType(),
    "int": T.IntegerType(),
    "long": T.LongType(),
    "double": T.DoubleType(),
    "date": T.DateType(),
    "timestamp": T.TimestampType(),
    "boolean": T.BooleanType(),
}
_SQL_TYPES = {"int": "int", "long": "bigint", "double": "double", "date": "date", "timestamp": "timestamp"}


# ----------------------------------------------------------------------------- locations


def dataset_uri(warehouse: str, prefix: str, dataset: str) -> str:
    return join_uri(warehouse, prefix, dataset)


def default_warehouse(batch: BatchInput) -> str:
    return f"s3a://{batch.bucket}"


def require_utc(spark: SparkSession) -> None:
    """Timestamps without an offset and DATE(created_at) must mean UTC, whatever the host says."""
    if spark.conf.get("spark.sql.session.timeZone") != "UTC":
        log.warning("spark.sql.session.timeZone was not UTC; setting it for this job")
        spark.conf.set("spark.sql.session.timeZone", "UTC")


# ----------------------------------------------------------------------------- files


@dataclass(frozen=True)
class SourceFile:
    uri: str
    dataset: str
    inspection: FileInspection


@dataclass
class Structure:
    """The batch's files after the file-level checks: readable ones by dataset, every outcome."""

    accepted: dict[str, list[SourceFile]] = field(default_factory=dict)
    outcomes: dict[str, FileOutcome] = field(default_factory=dict)  # uri -> outcome, in batch order
    missing: set[str] = field(default_factory=set)  # gone from S3 since upload: nothing to archive


def inspect_batch(storage: Storage, contracts: dict[str, Contract], batch: BatchInput) -> list[SourceFile]:
    """One streaming pass per raw file (hash, encoding, header, structure); no Spark."""
    sources = []
    for data_type in DataType:
        contract = contracts[data_type.value]
        for uri in batch.paths(data_type):
            try:
                inspection = inspect_file(lambda uri=uri: storage.iter_bytes(uri), contract)
            except FileNotFoundError:
                inspection = FileInspection(size=0, sha256="", reason=MISSING_FILE)
            sources.append(SourceFile(uri=uri, dataset=contract.dataset, inspection=inspection))
    return sources


def decide_files(sources: list[SourceFile], earlier: dict[str, tuple[str, str]]) -> Structure:
    """Reject files that failed their checks or repeat an accepted file byte for byte.

    ``earlier``: sha256 -> (uri, batch_id) of files accepted by other batches. Within the
    batch the first URI in sort order is kept and its copies are rejected.
    """
    structure = Structure()
    first_seen: dict[str, str] = {}
    for source in sorted(sources, key=lambda s: s.uri):
        reason = source.inspection.reason
        if reason is None and source.inspection.sha256 in earlier:
            original, batch_id = earlier[source.inspection.sha256]
            reason = duplicate_file_reason(original, batch_id)
        if reason is None:
            original = first_seen.setdefault(source.inspection.sha256, source.uri)
            if original != source.uri:
                reason = duplicate_file_reason(original)
        if reason is None:
            structure.accepted.setdefault(source.dataset, []).append(source)
        if reason == MISSING_FILE:
            structure.missing.add(source.uri)
        structure.outcomes[source.uri] = FileOutcome(
            uri=as_s3_uri(source.uri),
            dataset=source.dataset,
            status="accepted" if reason is None else "rejected",
            reason=reason,
            sha256=source.inspection.sha256 or None,
            size=source.inspection.size,
        )
    # Keep the batch's own order (datasets, then keys) for people reading the result.
    order = {s.uri: i for i, s in enumerate(sources)}
    structure.outcomes = dict(sorted(structure.outcomes.items(), key=lambda kv: order[kv[0]]))
    return structure


def earlier_copies(spark: SparkSession, warehouse: str, sources: list[SourceFile], batch_id: str) -> dict[str, tuple[str, str]]:
    """sha256 -> (uri, batch) for files of this batch that another batch already accepted."""
    hashes = sorted({s.inspection.sha256 for s in sources if s.inspection.reason is None})
    registry = read_delta_if_exists(spark, join_uri(warehouse, FILE_REGISTRY_PREFIX))
    if registry is None or not hashes:
        return {}
    rows = (
        registry.where((F.col("status") == "accepted") & (F.col(BATCH_ID) != batch_id) & F.col("sha256").isin(hashes))
        .select("sha256", SOURCE_FILE, BATCH_ID)
        .collect()  # a handful of metadata rows, never data
    )
    return {r["sha256"]: (r[SOURCE_FILE], r[BATCH_ID]) for r in sorted(rows, key=lambda r: (r[BATCH_ID], r[SOURCE_FILE]))}


# ----------------------------------------------------------------------------- reading


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
        to_spark_uri(source.uri),
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
        # the row's place in it. Evaluated at the scan, before any shuffle; see line_number().
        F.spark_partition_id().alias(_PID),
        F.monotonically_increasing_id().alias(_POS),
    )


# ----------------------------------------------------------------------------- row rules


@dataclass(frozen=True)
class Rule:
    """One check: when ``failed`` is true the row gets the error {rule, column, value, message}."""

    failed: SparkColumn
    rule: str  # rules.REQUIRED, rules.TYPE, ...
    column: str | None
    label: str  # the histogram key: the message without the value
    value: SparkColumn
    message: SparkColumn


def _trimmed(name: str) -> SparkColumn:
    """The raw value without surrounding blanks; NULL when nothing is left (rules.trim).

    Computed once per column in its own projection (trimmed_columns): every rule reads it,
    and re-trimming per rule made the checks ~4x slower (docs/benchmarks.md).
    """
    return F.col(_trimmed_name(name))


def _trimmed_name(name: str) -> str:
    return f"_t_{name}"


def trimmed_columns(contract: Contract) -> list[SparkColumn]:
    return [F.expr(f"nullif(btrim({_RAW}.`{c}`, ' \\t'), '')").alias(_trimmed_name(c)) for c in contract.column_names]


def _shown(value: SparkColumn) -> SparkColumn:
    return F.concat(F.lit("'"), F.substring(value, 1, rules.MAX_VALUE_IN_MESSAGE), F.lit("'"))


def typed_value(column: Column) -> SparkColumn:
    """Parse the trimmed raw string; NULL when blank or not a valid value of the type.

    The text must first match rules.TYPE_PATTERNS (the plain-Python checker uses the same);
    try_cast then rejects what the pattern cannot (overflow, 30 February), since Spark 4
    runs in ANSI mode where a plain cast raises.
    """
    value = _trimmed(column.name)
    if column.type == "string":
        return value
    matches = value.rlike(rules.TYPE_PATTERNS[column.type])
    if column.type == "boolean":
        return F.when(matches, F.lower(value) == "true")
    text = value
    if column.type == "timestamp":
        text = F.regexp_replace(value, *rules.SECONDLESS_OFFSET)
    parsed = text.try_cast(_SQL_TYPES[column.type])
    if column.type == "double":
        return F.when(matches & ~F.isnan(parsed) & (F.abs(parsed) != float("inf")), parsed)
    return F.when(matches, parsed)


def _rule(failed: SparkColumn, rule: str, column: Column, label: str, value: SparkColumn, suffix: str = "") -> Rule:
    message = F.concat(F.lit(f"{label}: "), _shown(value), F.lit(suffix))
    return Rule(failed, rule, column.name, label, F.substring(value, 1, rules.MAX_VALUE_IN_MESSAGE), message)


def column_rules(column: Column) -> list[Rule]:
    """In the order rules.check_value reports them."""
    name = column.name
    raw = _trimmed(name)
    typed = F.col(name)
    present = raw.isNotNull()
    valid = typed.isNotNull()
    out: list[Rule] = []
    if column.required:
        label = rules.required_label(name)
        out.append(Rule(~present, rules.REQUIRED, name, label, F.lit(None).cast("string"), F.lit(label)))
    if column.type != "string":
        out.append(_rule(present & ~valid, rules.TYPE, column, rules.type_label(column), raw, rules.type_suffix(column)))
    if column.min is not None:
        out.append(_rule(valid & (typed < F.lit(column.min)), rules.MIN, column, rules.min_label(column), raw))
    if column.max is not None:
        out.append(_rule(valid & (typed > F.lit(column.max)), rules.MAX, column, rules.max_label(column), raw))
    if column.decimals is not None:
        fraction = F.length(F.regexp_extract(raw, r"^[+-]?[0-9]*\.([0-9]*)", 1))
        out.append(_rule(valid & (fraction > column.decimals), rules.DECIMALS, column, rules.decimals_label(column), raw))
    if column.allowed is not None:
        label = rules.allowed_label(name)
        out.append(_rule(present & ~raw.isin(*column.allowed), rules.ALLOWED, column, label, raw, rules.allowed_suffix(column)))
    if column.pattern is not None:
        out.append(_rule(present & ~raw.rlike(column.pattern), rules.PATTERN, column, rules.pattern_label(column), raw))
    if column.max_length is not None:
        label = rules.max_length_label(column)
        length = F.length(raw)
        out.append(
            Rule(
                present & (length > column.max_length),
                rules.MAX_LENGTH,
                name,
                label,
                F.substring(raw, 1, rules.MAX_VALUE_IN_MESSAGE),
                F.concat(F.lit(f"{label}: "), length.cast("string")),
            )
        )
    return out


def _ref_found(ref_column: str) -> str:
    return f"_ref_found_{ref_column}"


_DUP_COUNT = "_dup_count"
_FAILED = "_failed"
_ERROR_TYPE = T.StructType([T.StructField(n, T.StringType()) for n in ("rule", "column", "value", "message", "label")])


def check_rows(
    raw: DataFrame,
    contract: Contract,
    referenced: dict[str, DataFrame],
) -> DataFrame:
    """Raw rows -> typed columns + ``_raw`` struct + ``errors`` array<struct<rule,column,value,message>>.

    ``referenced`` maps each reference column to a one-column frame of the valid keys it
    may point to (this batch's valid rows UNION the already validated table).
    """
    malformed = F.col(RAW_RECORD).isNotNull()
    frame = raw.select(
        F.struct(*[F.col(c) for c in contract.column_names]).alias(_RAW),
        F.col(RAW_RECORD),
        F.col(SOURCE_FILE),
        F.col(_PID),
        F.col(_POS),
    )
    frame = frame.select("*", *trimmed_columns(contract))
    frame = frame.select("*", *[typed_value(c).alias(c.name) for c in contract.columns])

    # Duplicate keys: every row of a key seen more than once is quarantined, since we cannot
    # know which one is right. Malformed rows and rows without a parseable key do not count.
    key_usable = ~malformed
    for key in contract.key:
        key_usable = key_usable & F.col(key).isNotNull()
    frame = frame.withColumn(
        _DUP_COUNT, F.sum(key_usable.cast("int")).over(Window.partitionBy(*[F.col(k) for k in contract.key]))
    )

    checks = [rule for column in contract.columns for rule in column_rules(column)]
    unique = rules.unique_label(contract)
    checks.append(
        Rule(
            key_usable & (F.col(_DUP_COUNT) > 1),
            rules.UNIQUE,
            ",".join(contract.key),
            unique,
            F.lit(None).cast("string"),
            F.concat(F.lit(f"{unique} ("), F.col(_DUP_COUNT).cast("string"), F.lit(" rows in batch)")),
        )
    )

    for ref in contract.references:
        found = _ref_found(ref.column)
        keys = referenced[ref.column].select(F.col(ref.key).alias(f"_ref_key_{ref.column}")).distinct()
        keys = keys.withColumn(found, F.lit(True))
        # Broadcast: the referenced keys of one batch (plus history) are a small dimension.
        frame = frame.join(F.broadcast(keys), F.col(ref.column) == F.col(f"_ref_key_{ref.column}"), "left").drop(
            f"_ref_key_{ref.column}"
        )
        label = rules.reference_label(ref.column, ref.dataset)
        text = _trimmed(ref.column)
        checks.append(
            Rule(
                F.col(ref.column).isNotNull() & F.col(found).isNull(),
                rules.REFERENCE,
                ref.column,
                label,
                F.substring(text, 1, rules.MAX_VALUE_IN_MESSAGE),
                F.concat(F.lit(f"{label}: "), _shown(text)),
            )
        )

    errors = F.array_compact(
        F.array(
            *[
                F.when(
                    r.failed,
                    F.struct(
                        F.lit(r.rule).alias("rule"),
                        F.lit(r.column).cast("string").alias("column"),
                        r.value.cast("string").alias("value"),
                        r.message.alias("message"),
                        F.lit(r.label).alias("label"),
                    ),
                )
                for r in checks
            ]
        )
    )
    # A malformed row's fields are shifted or missing; checking them would only add noise.
    malformed_error = F.array(
        F.struct(
            F.lit(rules.MALFORMED).alias("rule"),
            F.lit(None).cast("string").alias("column"),
            F.lit(None).cast("string").alias("value"),
            F.lit(rules.malformed_message(len(contract.columns))).alias("message"),
            F.lit(rules.MALFORMED_LABEL).alias("label"),
        )
    )
    # Most rows break no rule: test the flags first and build the error structs only when one
    # failed (building ~30 conditional structs for every row dominated the job).
    any_failed = F.lit(False)
    for r in checks:
        any_failed = any_failed | F.coalesce(r.failed, F.lit(False))
    # The flag is its own column so the ~30 conditions run once per row, not once per use.
    frame = frame.withColumn(_FAILED, malformed | any_failed)
    no_errors = F.array_compact(F.array(F.lit(None).cast(_ERROR_TYPE)))
    errors_column = F.when(malformed, malformed_error).when(F.col(_FAILED), errors).otherwise(no_errors)
    helper_columns = [_DUP_COUNT, _FAILED, *[_ref_found(r.column) for r in contract.references]]
    helper_columns += [_trimmed_name(c) for c in contract.column_names]
    # Only quarantined rows keep their raw strings: the cached frame stays about half as wide.
    return frame.select(
        *[c for c in frame.columns if c not in (_RAW, *helper_columns)],
        F.when(F.col(_FAILED), F.col(_RAW)).alias(_RAW),
        errors_column.alias(ERRORS),
    )


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


@dataclass(frozen=True)
class LineNumbers:
    """Turns (split, position in split) into a record index and a physical line of the file.

    ``offsets``: records before each split of each file, from the counts of the summary job
    (no extra Spark action). ``shifts``: per file, filecheck's (record index, line - index - 2)
    change points for blank lines and multi-line records; None when too many to track.
    """

    offsets: dict[tuple[str, int], int]
    shifts: dict[str, tuple[tuple[int, int], ...] | None]

    def record_index(self) -> SparkColumn:
        keys = F.concat(F.col(SOURCE_FILE), F.lit("#"), F.col(_PID).cast("string"))
        pairs = [x for (uri, pid), offset in sorted(self.offsets.items()) for x in (F.lit(f"{uri}#{pid}"), F.lit(offset))]
        offset = F.try_element_at(F.create_map(*pairs), keys) if pairs else F.lit(0)
        # monotonically_increasing_id = split index << 33 | position within the split.
        return F.col(_POS) - F.shiftleft(F.col(_PID).cast("long"), 33) + F.coalesce(offset, F.lit(0))

    def line_number(self, record: SparkColumn) -> SparkColumn:
        line = record + 2  # the header is line 1
        expr: SparkColumn | None = None
        for uri, shifts in self.shifts.items():
            if shifts == ():
                continue
            if shifts is None:
                file_line = F.lit(None).cast("long")
            else:
                points = F.array(*[F.struct(F.lit(r).alias("r"), F.lit(d).alias("d")) for r, d in shifts])
                last = F.try_element_at(F.filter(points, lambda p: p["r"] <= record), F.lit(-1))
                file_line = line + F.coalesce(last["d"], F.lit(0))
            condition = F.col(SOURCE_FILE) == uri
            expr = F.when(condition, file_line) if expr is None else expr.when(condition, file_line)
        return line if expr is None else expr.otherwise(line)


# ----------------------------------------------------------------------------- Delta I/O


def read_delta_if_exists(spark: SparkSession, uri: str) -> DataFrame | None:
    from delta.tables import DeltaTable  # delta-spark's Python API; the jar comes with the session

    spark_uri = to_spark_uri(uri)
    if not DeltaTable.isDeltaTable(spark, spark_uri):
        return None
    return spark.read.format("delta").load(spark_uri)


def replace_batch_rows(frame: DataFrame, uri: str, batch_id: str, partition_by: str | None = PROCESSING_DATE) -> None:
    """Overwrite only this batch's rows (creates the table on first write)."""
    writer = (
        frame.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"{BATCH_ID} = '{batch_id}'")  # batch_id matches [A-Za-z0-9_-]
        .option("mergeSchema", "true")  # tables written by an older version gain new columns
    )
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
    return spark.createDataFrame(rows, schema)


# ----------------------------------------------------------------------------- the job


def run_validation(
    spark: SparkSession,
    settings: Settings,
    batch: BatchInput,
    warehouse: str | None = None,
    *,
    storage: Storage | None = None,
    contracts: dict[str, Contract] | None = None,
) -> ValidationResult:
    warehouse = warehouse or default_warehouse(batch)
    storage = storage or Storage(settings)
    contracts = contracts or load_contracts()
    result_uri = join_uri(warehouse, VALIDATION_OUTPUT_PREFIX, f"{batch.batch_id}.json")
    require_utc(spark)

    sources = inspect_batch(storage, contracts, batch)
    structure = decide_files(sources, earlier_copies(spark, warehouse, sources, batch.batch_id))
    result = ValidationResult(
        batch_id=batch.batch_id,
        processing_date=batch.processing_date,
        status="passed",
        shape=batch_shape(batch),
        max_quarantined_share=settings.max_quarantined_share,
        result_uri=as_s3_uri(result_uri),
    )
    fit_shuffle_partitions(
        spark,
        settings,
        sum(s.inspection.size for files in structure.accepted.values() for s in files),
        SHUFFLE_CSV_BYTES,
    )
    checked: dict[str, DataFrame] = {}
    try:
        for dataset in dependency_order(contracts, structure.accepted):
            contract = contracts[dataset]
            referenced = {
                ref.column: _referenceable_keys(spark, warehouse, contracts[ref.dataset], checked.get(ref.dataset), batch)
                for ref in contract.references
            }
            raw = read_raw(spark, contract, structure.accepted[dataset])
            checked[dataset] = check_rows(raw, contract, referenced).cache()

        counts = _count(checked)  # the one action before the writes: materialises the caches
        _fill_result(result, structure, counts, contracts)
        if result.quarantined_share > settings.max_quarantined_share:
            result.status = "failed"
            result.errors = [_over_threshold(result, settings)]
        else:
            _write(spark, checked, contracts, structure, counts, batch, warehouse)
            result.processing_dates = [batch.processing_date] if checked else []
            result.archive = archive_plan(batch, structure)
    finally:
        for frame in checked.values():
            frame.unpersist()

    storage.write_text(result_uri, result.model_dump_json(indent=2))
    log.info("validation of %s: %s %s", batch.batch_id, result.status, result.errors or "")
    return result


def batch_shape(batch: BatchInput) -> str:
    has_tables = any(batch.paths(t) for t in (DataType.ORDERS, DataType.ORDER_ITEMS, DataType.PRODUCTS))
    has_flat = bool(batch.paths(DataType.ORDER_LINES))
    if has_tables and has_flat:
        return "mixed"
    if has_tables:
        return "tables"
    return "order_lines" if has_flat else "empty"


def archive_plan(batch: BatchInput, structure: Structure) -> list[ArchiveItem]:
    """Accepted files go to processed/<batch>/, rejected ones to rejected/<batch>/; vanished ones nowhere."""
    plan = []
    for item in batch.archive:
        uri = f"s3://{item.copy_source}"
        if uri in structure.missing:
            continue
        outcome = structure.outcomes.get(uri)
        if outcome is not None and outcome.status == "rejected":
            item = item.model_copy(
                update={"archive_key": f"{REJECTED_PREFIX}{batch.batch_id}/{item.source_key[len(RAW_PREFIX) :]}"}
            )
        plan.append(item)
    return plan


def _over_threshold(result: ValidationResult, settings: Settings) -> str:
    rows = sum(t.input_rows for t in result.tables.values())
    bad = sum(t.quarantined_rows for t in result.tables.values())
    return (
        f"quarantined {bad} of {rows} rows ({result.quarantined_share:.0%}), above the limit of "
        f"{settings.max_quarantined_share:.0%} (CARTFLOW_MAX_QUARANTINED_SHARE); nothing was written"
    )


def _write(
    spark: SparkSession,
    checked: dict[str, DataFrame],
    contracts: dict[str, Contract],
    structure: Structure,
    counts: Counts,
    batch: BatchInput,
    warehouse: str,
) -> None:
    lines = LineNumbers(
        offsets=counts.split_offsets(),
        shifts={s.uri: s.inspection.line_shifts for files in structure.accepted.values() for s in files},
    )
    for dataset, frame in checked.items():
        contract = contracts[dataset]
        replace_batch_rows(valid_rows(frame, contract, batch), dataset_uri(warehouse, VALIDATED_PREFIX, dataset), batch.batch_id)
        replace_batch_rows(
            quarantined_rows(frame, contract, batch, lines),
            dataset_uri(warehouse, QUARANTINE_PREFIX, dataset),
            batch.batch_id,
        )
    replace_batch_rows(
        registry_frame(spark, list(structure.outcomes.values()), batch),
        join_uri(warehouse, FILE_REGISTRY_PREFIX),
        batch.batch_id,
        partition_by=None,
    )


def _referenceable_keys(
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
        return spark.createDataFrame([], T.StructType([T.StructField(key, key_type)]))
    keys = parts[0]
    for part in parts[1:]:
        keys = keys.unionByName(part)
    return keys


# ----------------------------------------------------------------------------- counting

_VALID_TAG = "\u0000valid"


@dataclass
class Counts:
    """Rows per (dataset, file, split, tag): tag is _VALID_TAG or a rule label (a row counts once per label)."""

    rows: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (dataset, file, split) -> rows
    valid: dict[str, int] = field(default_factory=dict)  # file -> valid rows
    labels: dict[str, dict[str, int]] = field(default_factory=dict)  # dataset -> label -> rows

    def file_rows(self, uri: str) -> int:
        return sum(n for (_, f, _), n in self.rows.items() if f == uri)

    def split_offsets(self) -> dict[tuple[str, int], int]:
        """Records in the earlier splits of the same file (splits of one file are in file order)."""
        offsets: dict[tuple[str, int], int] = {}
        running: dict[str, int] = {}
        for (_, uri, split), n in sorted(self.rows.items(), key=lambda kv: (kv[0][1], kv[0][2])):
            offsets[(uri, split)] = running.get(uri, 0)
            running[uri] = running.get(uri, 0) + n
        return offsets


def _count(checked: dict[str, DataFrame]) -> Counts:
    """Counts for the result, the threshold and line numbers, in ONE Spark job."""
    counts = Counts()
    if not checked:
        return counts
    parts = []
    for dataset, frame in checked.items():
        # One "row" tag per row, plus a valid tag or one tag per distinct label of its errors.
        tags = F.when(F.size(ERRORS) == 0, F.array(F.lit("\u0000row"), F.lit(_VALID_TAG))).otherwise(
            F.concat(F.array(F.lit("\u0000row")), F.array_distinct(F.transform(F.col(ERRORS), lambda e: e["label"])))
        )
        parts.append(frame.select(F.lit(dataset).alias("dataset"), F.col(SOURCE_FILE), F.col(_PID), F.explode(tags).alias("tag")))
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    for row in union.groupBy("dataset", SOURCE_FILE, _PID, "tag").count().collect():
        dataset, uri, split, tag, n = row["dataset"], row[SOURCE_FILE], row[_PID], row["tag"], row["count"]
        if tag == "\u0000row":
            counts.rows[(dataset, uri, split)] = n
        elif tag == _VALID_TAG:
            counts.valid[uri] = counts.valid.get(uri, 0) + n
        else:
            labels = counts.labels.setdefault(dataset, {})
            labels[tag] = labels.get(tag, 0) + n
    return counts


def _fill_result(result: ValidationResult, structure: Structure, counts: Counts, contracts: dict[str, Contract]) -> None:
    tables: dict[str, TableResult] = {}
    for outcome in structure.outcomes.values():
        table = tables.setdefault(outcome.dataset, TableResult(contract_version=contracts[outcome.dataset].version))
        if outcome.status == "rejected":
            table.rejected_files += 1
            continue
        uri = next(s.uri for s in structure.accepted[outcome.dataset] if as_s3_uri(s.uri) == outcome.uri)
        outcome.rows = counts.file_rows(uri)
        outcome.valid_rows = counts.valid.get(uri, 0)
        outcome.quarantined_rows = outcome.rows - outcome.valid_rows
        table.files += 1
        table.input_rows += outcome.rows
        table.valid_rows += outcome.valid_rows
        table.quarantined_rows += outcome.quarantined_rows
    for dataset, table in tables.items():
        table.reasons = dict(sorted(counts.labels.get(dataset, {}).items()))
    result.tables = dict(sorted(tables.items()))
    result.files = list(structure.outcomes.values())
    total = sum(t.input_rows for t in tables.values())
    result.quarantined_share = round(sum(t.quarantined_rows for t in tables.values()) / total, 4) if total else 0.0
