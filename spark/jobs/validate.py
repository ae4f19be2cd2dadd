"""The VALIDATION job: raw CSVs of one batch -> Delta ``validated/`` + ``quarantine/`` tables.

Flow (few Spark actions: one aggregation for the result, then two Delta writes per dataset):
1. Structural check of every file's header without Spark (storage reads the first bytes).
   Any missing/empty/header-less file or missing contract column fails the whole batch and
   nothing is written to Delta.
2. Each file is read with an all-string schema built from its own header (PERMISSIVE, with a
   corrupt-record column), so column order may differ between files and extra columns are
   dropped.
3. Per row, every rule violation becomes one reason {rule, message}: ``rule`` is the stable
   prefix used for the histogram, ``message`` carries the offending value.
4. Rows without reasons are written typed to ``validated/<dataset>``, the others raw to
   ``quarantine/<dataset>``; both with replaceWhere on batch_id so a replay only replaces
   this batch's rows.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cartflow.config import Settings
from cartflow.jobs.contracts import Column, Contract, load_contracts
from cartflow.jobs.storage import Storage, as_s3_uri, join_uri
from cartflow.models import (
    QUARANTINE_PREFIX,
    VALIDATED_PREFIX,
    VALIDATION_OUTPUT_PREFIX,
    BatchInput,
    DataType,
    TableResult,
    ValidationResult,
)

log = logging.getLogger(__name__)

# Column names the job adds; contract columns are lower_snake_case without a leading "_".
BATCH_ID = "batch_id"
PROCESSING_DATE = "processing_date"
SOURCE_FILE = "source_file"
RAW_RECORD = "raw_record"  # the unparsed line of a malformed row
REASONS = "reasons"
REASON = "reason"
_CORRUPT = "_corrupt_record"
_RAW = "_raw"  # struct of the raw (string) contract columns while checking

MALFORMED_ROW = "malformed row"
HEADER_PROBE_BYTES = 64 * 1024
MAX_VALUE_IN_MESSAGE = 80  # keep quarantine reasons readable when a value is huge

SPARK_TYPES: dict[str, T.DataType] = {
    "string": T.StringType(),
    "int": T.IntegerType(),
    "long": T.LongType(),
    "double": T.DoubleType(),
    "date": T.DateType(),
    "timestamp": T.TimestampType(),
    "boolean": T.BooleanType(),
}
_SQL_TYPES = {"int": "int", "long": "bigint", "date": "date", "timestamp": "timestamp"}


# ----------------------------------------------------------------------------- schemas


def validated_schema(contract: Contract) -> T.StructType:
    """Schema of ``validated/<dataset>``: typed contract columns + lineage columns."""
    fields = [T.StructField(c.name, SPARK_TYPES[c.type]) for c in contract.columns]
    return T.StructType(fields + _lineage_fields())


def quarantine_schema(contract: Contract) -> T.StructType:
    fields = [T.StructField(c.name, T.StringType()) for c in contract.columns]
    fields += [
        T.StructField(RAW_RECORD, T.StringType()),
        T.StructField(REASONS, T.ArrayType(T.StringType(), containsNull=False)),
        T.StructField(REASON, T.StringType()),
    ]
    return T.StructType(fields + _lineage_fields())


def _lineage_fields() -> list[T.StructField]:
    return [
        T.StructField(BATCH_ID, T.StringType()),
        T.StructField(PROCESSING_DATE, T.DateType()),
        T.StructField(SOURCE_FILE, T.StringType()),
    ]


def dataset_uri(warehouse: str, prefix: str, dataset: str) -> str:
    return join_uri(warehouse, prefix, dataset)


def default_warehouse(batch: BatchInput) -> str:
    return f"s3a://{batch.bucket}"


def require_utc(spark: SparkSession) -> None:
    """Timestamps without an offset and DATE(created_at) must mean UTC, whatever the host says."""
    if spark.conf.get("spark.sql.session.timeZone") != "UTC":
        log.warning("spark.sql.session.timeZone was not UTC; setting it for this job")
        spark.conf.set("spark.sql.session.timeZone", "UTC")


def to_spark_uri(uri: str) -> str:
    # Imported lazily: session.py is the one owner of the s3:// -> s3a:// rule.
    from cartflow.jobs.session import to_spark_uri as convert

    return convert(uri)


# ----------------------------------------------------------------------------- structure


@dataclass(frozen=True)
class SourceFile:
    uri: str
    header: tuple[str, ...]


@dataclass
class StructureReport:
    files: dict[str, list[SourceFile]] = field(default_factory=dict)  # dataset -> readable files
    errors: list[str] = field(default_factory=list)
    warnings: dict[str, Counter[str]] = field(default_factory=dict)  # dataset -> warning -> files


def check_structure(storage: Storage, contracts: dict[str, Contract], batch: BatchInput) -> StructureReport:
    report = StructureReport()
    for data_type in DataType:
        contract = contracts[data_type.value]
        for uri in batch.paths(data_type):
            header, error = read_header(storage, uri)
            if error is None and header is not None:
                error = header_error(uri, header, contract)
            if error is not None:
                report.errors.append(error)
                continue
            assert header is not None
            report.files.setdefault(contract.dataset, []).append(SourceFile(uri=uri, header=header))
            for extra in sorted(set(header) - set(contract.column_names)):
                warnings = report.warnings.setdefault(contract.dataset, Counter())
                warnings[f"warning: extra column {extra!r} ignored"] += 1
    return report


def read_header(storage: Storage, uri: str) -> tuple[tuple[str, ...] | None, str | None]:
    """(header, None) or (None, error message naming the file)."""
    data = storage.read_bytes(uri, max_bytes=HEADER_PROBE_BYTES)
    if data is None:
        return None, f"{uri}: file does not exist"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        # A ranged read may cut a multi-byte character at the end; only the first line matters.
        text = data.decode("utf-8-sig", errors="ignore")
    first_line, newline, _ = text.partition("\n")
    if not first_line.strip():
        return None, f"{uri}: file is empty or has no header row"
    if not newline and len(data) >= HEADER_PROBE_BYTES:
        return None, f"{uri}: header row longer than {HEADER_PROBE_BYTES} bytes"
    row = next(csv.reader(io.StringIO(first_line.rstrip("\r"))), [])
    return tuple(name.strip() for name in row), None


def header_error(uri: str, header: tuple[str, ...], contract: Contract) -> str | None:
    duplicated = sorted(name for name, count in Counter(header).items() if count > 1)
    if duplicated:
        return f"{uri}: header repeats column(s) {', '.join(duplicated)}"
    missing = [c for c in contract.column_names if c not in header]
    if missing:
        return f"{uri}: header is missing column(s) {', '.join(missing)} (expected by the {contract.dataset} contract)"
    return None


# ----------------------------------------------------------------------------- reading


def read_raw(spark: SparkSession, contract: Contract, files: Sequence[SourceFile]) -> DataFrame:
    """All files of one dataset as raw strings: contract columns, raw_record, source_file."""
    frames = [_read_one_file(spark, contract, f) for f in files]
    combined = frames[0]
    for frame in frames[1:]:
        combined = combined.unionByName(frame)
    return combined


def _read_one_file(spark: SparkSession, contract: Contract, source: SourceFile) -> DataFrame:
    # Positional names: the header may hold names Spark would misparse (dots, spaces).
    positional = [f"_c{i}" for i in range(len(source.header))]
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
    )
    position = {name: i for i, name in enumerate(source.header)}
    return frame.select(
        *[F.col(positional[position[c]]).alias(c) for c in contract.column_names],
        F.col(_CORRUPT).alias(RAW_RECORD),
        F.lit(source.uri).alias(SOURCE_FILE),
    )


# ----------------------------------------------------------------------------- row rules


@dataclass(frozen=True)
class Rule:
    """One check: when ``failed`` is true the row gets reason {rule, message}."""

    failed: SparkColumn
    rule: str
    message: SparkColumn


def _trimmed(name: str) -> SparkColumn:
    """The raw value with surrounding whitespace removed; NULL when blank."""
    value = F.trim(F.col(f"{_RAW}.{name}"))
    return F.when(value != "", value)


def _shown(value: SparkColumn) -> SparkColumn:
    return F.concat(F.lit("'"), F.substring(value, 1, MAX_VALUE_IN_MESSAGE), F.lit("'"))


def typed_value(column: Column) -> SparkColumn:
    """Parse the trimmed raw string; NULL when blank or not a valid value of the type.

    try_* functions because Spark 4 runs in ANSI mode, where a plain cast raises.
    """
    value = _trimmed(column.name)
    if column.type == "string":
        return value
    if column.type in ("int", "long"):
        return F.expr(f"try_cast(trim({_RAW}.{column.name}) AS {_SQL_TYPES[column.type]})")
    if column.type == "timestamp":
        # A time part is required: a bare date would silently become midnight.
        return F.when(
            value.rlike(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}"),
            F.expr(f"try_cast(trim({_RAW}.{column.name}) AS timestamp)"),
        )
    if column.type == "double":
        number = F.expr(f"try_cast(trim({_RAW}.{column.name}) AS double)")
        # NaN/Infinity parse as doubles but are not amounts.
        return F.when(~F.isnan(number) & (F.abs(number) != float("inf")), number)
    if column.type == "date":
        # Strict ISO date: a plain cast would also accept '2025-7-6' or a timestamp.
        return F.when(value.rlike(r"^\d{4}-\d{2}-\d{2}$"), F.expr(f"try_cast(trim({_RAW}.{column.name}) AS date)"))
    if column.type == "boolean":
        lowered = F.lower(value)
        return F.when(lowered.isin("true", "false"), lowered == "true")
    raise ValueError(f"unsupported column type {column.type!r}")


def column_rules(column: Column) -> list[Rule]:
    name = column.name
    raw = _trimmed(name)
    typed = F.col(name)
    present = raw.isNotNull()
    rules: list[Rule] = []
    if column.required:
        rules.append(Rule(~present, f"{name}: required value missing", F.lit(f"{name}: required value missing")))
    if column.type != "string":
        rule = f"{name}: not a valid {column.type}"
        rules.append(Rule(present & typed.isNull(), rule, F.concat(F.lit(f"{rule}: "), _shown(raw))))
    if column.min is not None:
        rule = f"{name}: below minimum {_number(column.min)}"
        rules.append(Rule(typed < F.lit(column.min), rule, F.concat(F.lit(f"{rule}: "), _shown(raw))))
    if column.max is not None:
        rule = f"{name}: above maximum {_number(column.max)}"
        rules.append(Rule(typed > F.lit(column.max), rule, F.concat(F.lit(f"{rule}: "), _shown(raw))))
    if column.allowed is not None:
        rule = f"{name}: value not allowed"
        allowed = ", ".join(column.allowed)
        rules.append(
            Rule(
                present & ~raw.isin(*column.allowed),
                rule,
                F.concat(F.lit(f"{rule}: "), _shown(raw), F.lit(f" (allowed: {allowed})")),
            )
        )
    if column.pattern is not None:
        rule = f"{name}: does not match pattern"
        rules.append(
            Rule(present & ~raw.rlike(column.pattern), rule, F.concat(F.lit(f"{rule} {column.pattern}: "), _shown(raw)))
        )
    return rules


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else str(bound)


def _key_label(contract: Contract) -> str:
    return ",".join(contract.key)


def _ref_found(ref_column: str) -> str:
    return f"_ref_found_{ref_column}"


def _dup_count() -> str:
    return "_dup_count"


def check_rows(
    raw: DataFrame,
    contract: Contract,
    referenced: dict[str, DataFrame],
) -> DataFrame:
    """Raw rows -> typed columns + ``_raw`` struct + ``reasons`` array<struct<rule,message>>.

    ``referenced`` maps each reference column to a one-column frame of the valid keys it
    may point to (this batch's valid rows UNION the already validated table).
    """
    malformed = F.col(RAW_RECORD).isNotNull()
    frame = raw.select(
        F.struct(*[F.col(c) for c in contract.column_names]).alias(_RAW),
        F.col(RAW_RECORD),
        F.col(SOURCE_FILE),
    )
    frame = frame.select("*", *[typed_value(c).alias(c.name) for c in contract.columns])

    # Duplicate keys: every row of a key seen more than once is quarantined, since we cannot
    # know which one is right. Malformed rows and rows without a parseable key do not count.
    key_usable = ~malformed
    for key in contract.key:
        key_usable = key_usable & F.col(key).isNotNull()
    frame = frame.withColumn(
        _dup_count(), F.sum(key_usable.cast("int")).over(Window.partitionBy(*[F.col(k) for k in contract.key]))
    )

    rules = [rule for column in contract.columns for rule in column_rules(column)]
    dup_rule = f"{_key_label(contract)}: duplicate key"
    rules.append(
        Rule(
            key_usable & (F.col(_dup_count()) > 1),
            dup_rule,
            F.concat(F.lit(f"{dup_rule} ("), F.col(_dup_count()).cast("string"), F.lit(" rows in batch)")),
        )
    )

    for ref in contract.references:
        found = _ref_found(ref.column)
        keys = referenced[ref.column].select(F.col(ref.key).alias(f"_ref_key_{ref.column}")).distinct()
        keys = keys.withColumn(found, F.lit(True))
        frame = frame.join(keys, F.col(ref.column) == F.col(f"_ref_key_{ref.column}"), "left").drop(
            f"_ref_key_{ref.column}"
        )
        rule = f"{ref.column}: no such {ref.dataset}"
        rules.append(
            Rule(
                F.col(ref.column).isNotNull() & F.col(found).isNull(),
                rule,
                F.concat(F.lit(f"{rule}: "), _shown(F.col(ref.column).cast("string"))),
            )
        )

    reasons = F.array_compact(
        F.array(*[F.when(r.failed, F.struct(F.lit(r.rule).alias("rule"), r.message.alias("message"))) for r in rules])
    )
    # A malformed row's fields are shifted or missing; checking them would only add noise.
    malformed_reason = F.array(F.struct(F.lit(MALFORMED_ROW).alias("rule"), F.lit(MALFORMED_ROW).alias("message")))
    helper_columns = [_dup_count(), *[_ref_found(r.column) for r in contract.references]]
    return frame.withColumn(REASONS, F.when(malformed, malformed_reason).otherwise(reasons)).drop(*helper_columns)


def valid_rows(checked: DataFrame, contract: Contract, batch: BatchInput) -> DataFrame:
    return checked.where(F.size(REASONS) == 0).select(
        *[F.col(c) for c in contract.column_names], *_lineage_columns(batch)
    )


def quarantined_rows(checked: DataFrame, contract: Contract, batch: BatchInput) -> DataFrame:
    messages = F.transform(F.col(REASONS), lambda r: r["message"])
    return checked.where(F.size(REASONS) > 0).select(
        *[F.col(f"{_RAW}.{c}").alias(c) for c in contract.column_names],
        F.col(RAW_RECORD),
        messages.alias(REASONS),
        F.array_join(messages, "; ").alias(REASON),
        *_lineage_columns(batch),
    )


def _lineage_columns(batch: BatchInput) -> list[SparkColumn]:
    return [
        F.lit(batch.batch_id).alias(BATCH_ID),
        F.lit(date.fromisoformat(batch.processing_date)).alias(PROCESSING_DATE),
        F.col(SOURCE_FILE),
    ]


# ----------------------------------------------------------------------------- Delta I/O


def read_delta_if_exists(spark: SparkSession, uri: str) -> DataFrame | None:
    from delta.tables import DeltaTable  # delta-spark's Python API; the jar comes with the session

    spark_uri = to_spark_uri(uri)
    if not DeltaTable.isDeltaTable(spark, spark_uri):
        return None
    return spark.read.format("delta").load(spark_uri)


def replace_batch_rows(frame: DataFrame, uri: str, batch_id: str) -> None:
    """Overwrite only this batch's rows (creates the table on first write)."""
    (
        frame.write.format("delta")
        .mode("overwrite")
        .option("replaceWhere", f"{BATCH_ID} = '{batch_id}'")  # batch_id matches [A-Za-z0-9_-]
        .partitionBy(PROCESSING_DATE)
        .save(to_spark_uri(uri))
    )


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

    structure = check_structure(storage, contracts, batch)
    result = ValidationResult(
        batch_id=batch.batch_id,
        processing_date=batch.processing_date,
        status="passed",
        shape=batch_shape(batch),
        result_uri=as_s3_uri(result_uri),
    )
    if structure.errors:
        result.status = "failed"
        result.errors = structure.errors
    else:
        result.tables = _validate_datasets(spark, batch, warehouse, contracts, structure)

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


def _validate_datasets(
    spark: SparkSession,
    batch: BatchInput,
    warehouse: str,
    contracts: dict[str, Contract],
    structure: StructureReport,
) -> dict[str, TableResult]:
    checked: dict[str, DataFrame] = {}
    try:
        for dataset in dependency_order(contracts, structure.files):
            contract = contracts[dataset]
            referenced = {
                ref.column: _referenceable_keys(
                    spark, warehouse, contracts[ref.dataset], checked.get(ref.dataset), batch
                )
                for ref in contract.references
            }
            raw = read_raw(spark, contract, structure.files[dataset])
            checked[dataset] = check_rows(raw, contract, referenced).cache()

        tables = _summarise(checked, structure)  # first action: materialises the caches
        for dataset, frame in checked.items():
            contract = contracts[dataset]
            replace_batch_rows(
                valid_rows(frame, contract, batch), dataset_uri(warehouse, VALIDATED_PREFIX, dataset), batch.batch_id
            )
            replace_batch_rows(
                quarantined_rows(frame, contract, batch),
                dataset_uri(warehouse, QUARANTINE_PREFIX, dataset),
                batch.batch_id,
            )
        return tables
    finally:
        for frame in checked.values():
            frame.unpersist()


def dependency_order(contracts: dict[str, Contract], present: Iterable[str]) -> list[str]:
    """Datasets of the batch, each after the datasets it references (their valid rows feed RI)."""
    present = set(present)
    ordered: list[str] = []

    def visit(dataset: str, path: tuple[str, ...]) -> None:
        if dataset in ordered or dataset not in present:
            return
        if dataset in path:
            raise ValueError(f"reference cycle between contracts: {' -> '.join((*path, dataset))}")
        for ref in contracts[dataset].references:
            visit(ref.dataset, (*path, dataset))
        ordered.append(dataset)

    for dataset in sorted(present):
        visit(dataset, ())
    return ordered


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
        parts.append(target_checked.where(F.size(REASONS) == 0).select(key))
    existing = read_delta_if_exists(spark, dataset_uri(warehouse, VALIDATED_PREFIX, target.dataset))
    if existing is not None:
        parts.append(existing.where(F.col(BATCH_ID) != batch.batch_id).select(key))
    if not parts:
        return spark.createDataFrame([], T.StructType([T.StructField(key, key_type)]))
    keys = parts[0]
    for part in parts[1:]:
        keys = keys.unionByName(part)
    return keys


def _summarise(checked: dict[str, DataFrame], structure: StructureReport) -> dict[str, TableResult]:
    """Counts and reason histograms of every dataset in ONE Spark job."""
    valid_marker, quarantined_marker = "\u0000valid", "\u0000quarantined"
    parts = []
    for dataset, frame in checked.items():
        tags = F.when(F.size(REASONS) == 0, F.array(F.lit(valid_marker))).otherwise(
            F.concat(F.array(F.lit(quarantined_marker)), F.transform(F.col(REASONS), lambda r: r["rule"]))
        )
        parts.append(frame.select(F.lit(dataset).alias("dataset"), F.explode(tags).alias("tag")))
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)

    tables = {dataset: TableResult() for dataset in checked}
    for row in union.groupBy("dataset", "tag").count().collect():
        table = tables[row["dataset"]]
        if row["tag"] == valid_marker:
            table.valid_rows = row["count"]
        elif row["tag"] == quarantined_marker:
            table.quarantined_rows = row["count"]
        else:
            table.reasons[row["tag"]] = row["count"]
    for dataset, table in tables.items():
        table.input_rows = table.valid_rows + table.quarantined_rows
        table.reasons.update(structure.warnings.get(dataset, {}))
        table.reasons = dict(sorted(table.reasons.items()))
    return tables
