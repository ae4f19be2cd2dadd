"""Row rules: raw strings -> typed columns and an ``errors`` array per row, in one projection."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark.jobs import rules
from spark.jobs.contracts import Column, Contract
from spark.jobs.validation.columns import _PID, _POS, _RAW, ERRORS, RAW_RECORD, SOURCE_FILE

_SQL_TYPES = {"int": "int", "long": "bigint", "double": "double", "date": "date", "timestamp": "timestamp"}


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
        for pattern, replacement in rules.TIMESTAMP_REWRITES:
            text = F.regexp_replace(text, pattern, replacement)
    parsed = text.try_cast(_SQL_TYPES[column.type])
    if column.type == "double":
        return F.when(matches & ~F.isnan(parsed) & (F.abs(parsed) != float("inf")), parsed)
    return F.when(matches, parsed)


def _rule(failed: SparkColumn, rule: str, column: Column, label: str, value: SparkColumn, suffix: str | SparkColumn = "") -> Rule:
    message = F.concat(F.lit(f"{label}: "), _shown(value), F.lit(suffix) if isinstance(suffix, str) else suffix)
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
        suffix: str | SparkColumn = rules.type_suffix(column)
        if column.type == "timestamp":  # rules.type_suffix(column, value): a zone name gets its fix
            suffix = F.when(raw.rlike(rules.ZONE_NAME_PATTERN), F.lit(rules.ZONE_NAME_SUFFIX)).otherwise(F.lit(suffix))
        out.append(_rule(present & ~valid, rules.TYPE, column, rules.type_label(column), raw, suffix))
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


@dataclass(frozen=True)
class _Checks:
    """A contract's row expressions. They name columns only (no DataFrame), so one set serves
    every batch of a session: building them is thousands of Py4J calls, ~0.5-1 s per dataset
    and batch on a warm driver (docs/benchmarks.md)."""

    raw_struct: SparkColumn
    trimmed: list[SparkColumn]
    typed: list[SparkColumn]
    dup_count: SparkColumn
    failed: SparkColumn
    errors: SparkColumn
    helpers: list[str]


class _ChecksCache:
    """Expressions are JVM objects of one Py4J gateway: a new gateway (JVM) starts afresh."""

    def __init__(self) -> None:
        self.gateway: object | None = None
        self.by_contract: dict[Contract, _Checks] = {}

    def get(self, contract: Contract) -> _Checks:
        from pyspark import SparkContext

        gateway = SparkContext._gateway
        if gateway is not self.gateway:
            self.gateway, self.by_contract = gateway, {}
        if contract not in self.by_contract:
            self.by_contract[contract] = _build_checks(contract)
        return self.by_contract[contract]


_CHECKS = _ChecksCache()


def _build_checks(contract: Contract) -> _Checks:
    malformed = F.col(RAW_RECORD).isNotNull()
    # Duplicate keys: every row of a key seen more than once is quarantined, since we cannot
    # know which one is right. Malformed rows and rows without a parseable key do not count.
    key_usable = ~malformed
    for key in contract.key:
        key_usable = key_usable & F.col(key).isNotNull()
    dup_count = F.sum(key_usable.cast("int")).over(Window.partitionBy(*[F.col(k) for k in contract.key]))

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
        label = rules.reference_label(ref.column, ref.dataset)
        text = _trimmed(ref.column)
        checks.append(
            Rule(
                F.col(ref.column).isNotNull() & F.col(_ref_found(ref.column)).isNull(),
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
    no_errors = F.array_compact(F.array(F.lit(None).cast(_ERROR_TYPE)))
    return _Checks(
        raw_struct=F.struct(*[F.col(c) for c in contract.column_names]).alias(_RAW),
        trimmed=trimmed_columns(contract),
        typed=[typed_value(c).alias(c.name) for c in contract.columns],
        dup_count=dup_count,
        failed=malformed | any_failed,
        errors=F.when(malformed, malformed_error).when(F.col(_FAILED), errors).otherwise(no_errors).alias(ERRORS),
        helpers=[
            _DUP_COUNT,
            _FAILED,
            *[_ref_found(r.column) for r in contract.references],
            *[_trimmed_name(c) for c in contract.column_names],
        ],
    )


def check_rows(
    raw: DataFrame,
    contract: Contract,
    referenced: dict[str, DataFrame],
) -> DataFrame:
    """Raw rows -> typed columns + ``_raw`` struct + ``errors`` array<struct<rule,column,value,message>>.

    ``referenced`` maps each reference column to a one-column frame of the valid keys it
    may point to (this batch's valid rows UNION the already validated table).
    """
    checks = _CHECKS.get(contract)
    frame = raw.select(checks.raw_struct, F.col(RAW_RECORD), F.col(SOURCE_FILE), F.col(_PID), F.col(_POS))
    frame = frame.select("*", *checks.trimmed)
    frame = frame.select("*", *checks.typed)
    frame = frame.withColumn(_DUP_COUNT, checks.dup_count)
    for ref in contract.references:
        keys = referenced[ref.column].select(F.col(ref.key).alias(f"_ref_key_{ref.column}")).distinct()
        keys = keys.withColumn(_ref_found(ref.column), F.lit(True))
        # Broadcast: the referenced keys of one batch (plus history) are a small dimension.
        frame = frame.join(F.broadcast(keys), F.col(ref.column) == F.col(f"_ref_key_{ref.column}"), "left").drop(
            f"_ref_key_{ref.column}"
        )
    # The flag is its own column so the ~30 conditions run once per row, not once per use.
    frame = frame.withColumn(_FAILED, checks.failed)
    # Only quarantined rows keep their raw strings: the cached frame stays about half as wide.
    return frame.select(
        *[c for c in frame.columns if c not in (_RAW, *checks.helpers)],
        F.when(F.col(_FAILED), F.col(_RAW)).alias(_RAW),
        checks.errors,
    )
