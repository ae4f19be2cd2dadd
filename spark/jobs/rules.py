"""What a contract rule accepts and how a violation is worded — shared by Spark and plain Python.

The Spark job (validation/rows.py) and the local checker (``cartflow contracts check``, rowcheck.py)
both gate every typed value with the regular expressions below before parsing it, so both
accept exactly the same text, and both word a violation with the functions below, so a data
producer sees the very reason the job would record. Nothing here imports Spark.

A violation is ``{rule, column, value, message}``: ``rule`` is a stable identifier (the
histogram key is ``label``, e.g. ``"quantity: below minimum 1"``), ``message`` is
``label`` plus the offending value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime

from spark.jobs.contracts import Column, Contract

MAX_VALUE_IN_MESSAGE = 80  # keep reasons readable when a value is huge
TRIM_CHARS = " \t"  # surrounding blanks producers add by accident; a blank value is missing

# Rule identifiers (the `rule` field of a quarantine error).
REQUIRED = "required"
TYPE = "type"
MIN = "min"
MAX = "max"
ALLOWED = "allowed"
PATTERN = "pattern"
MAX_LENGTH = "max_length"
DECIMALS = "decimals"
UNIQUE = "unique"
REFERENCE = "reference"
MALFORMED = "malformed"

# Text a value of each type must match before it is parsed. Anchored; Java and Python agree
# on these constructs. Integers: sign + digits (no "1,234", "1.0", "1e3"). Doubles: plain or
# exponent notation (no thousands separators, no NaN/Infinity, no Java "1d"). Dates: ISO only.
# Timestamps: ISO date + HH:MM[:SS[.ffffff]] and an optional zone that names UTC or an offset:
# "Z", " UTC" (BigQuery's CSV export: "2025-08-01 10:00:00 UTC"), "+HH", "+HHMM" or "+HH:MM";
# no zone = UTC. Before parsing, both sides rewrite the zone to "Z" / "+HH:MM" and add ":00"
# before a zone that follows minutes, which Spark's parser otherwise refuses (TIMESTAMP_REWRITES).
TYPE_PATTERNS: dict[str, str] = {
    "int": r"^[+-]?[0-9]+$",
    "long": r"^[+-]?[0-9]+$",
    "double": r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$",
    "date": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
    "timestamp": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z| UTC|[+-][0-9]{2}(:?[0-9]{2})?)?$",
    "boolean": r"(?i)^(true|false)$",
}
# (pattern, replacement) pairs applied in order, in Java (regexp_replace) and Python (re.sub) syntax alike.
TIMESTAMP_REWRITES: tuple[tuple[str, str], ...] = (
    (r" UTC$", "Z"),
    (r"([+-][0-9]{2})$", "$1:00"),  # +HH
    (r"([+-][0-9]{2})([0-9]{2})$", "$1:$2"),  # +HHMM
    (r"^([0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2})(Z|[+-][0-9]{2}:[0-9]{2})$", "$1:00$2"),  # no seconds
)
# A time followed by a zone *name* ("CET", "Europe/Paris", "utc"): refused, with how to fix it.
ZONE_NAME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)? ?[A-Za-z][A-Za-z0-9_/+-]*$"
ZONE_NAME_SUFFIX = " (the only time zone name read is ' UTC': convert the time to UTC, or write its offset such as +02:00)"
INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_COMPILED = {t: re.compile(p) for t, p in TYPE_PATTERNS.items()}


@dataclass(frozen=True)
class Violation:
    rule: str
    column: str | None
    value: str | None  # the trimmed offending text, cut to MAX_VALUE_IN_MESSAGE characters
    message: str
    label: str  # the message without the value: what the per-rule histogram counts

    def __post_init__(self) -> None:
        if self.value is not None and len(self.value) > MAX_VALUE_IN_MESSAGE:
            object.__setattr__(self, "value", self.value[:MAX_VALUE_IN_MESSAGE])

    @classmethod
    def of(cls, rule: str, column: str | None, label: str, value: str | None, suffix: str = "") -> Violation:
        """The usual shape: ``<label>: '<value>'<suffix>``, or just the label without a value."""
        message = label if value is None else f"{label}: {shown(value)}{suffix}"
        return cls(rule, column, value, message, label)


def shown(value: str) -> str:
    return f"'{value[:MAX_VALUE_IN_MESSAGE]}'"


def number(bound: float) -> str:
    """Integral bounds print without a fraction (0.0 -> 0)."""
    return str(int(bound)) if float(bound).is_integer() else str(bound)


# ----------------------------------------------------------------------------- labels


def required_label(column: str) -> str:
    return f"{column}: required value missing"


def type_label(column: Column) -> str:
    return f"{column.name}: not a valid {column.type}"


def type_suffix(column: Column, value: str | None = None) -> str:
    """A hint after the value for the formats people most often get wrong (a zone name: how to fix it)."""
    if column.type == "timestamp" and value is not None and re.match(ZONE_NAME_PATTERN, value):
        return ZONE_NAME_SUFFIX
    return {"date": " (expected YYYY-MM-DD)", "timestamp": " (expected YYYY-MM-DD HH:MM[:SS])"}.get(column.type, "")


def min_label(column: Column) -> str:
    assert column.min is not None
    return f"{column.name}: below minimum {number(column.min)}"


def max_label(column: Column) -> str:
    assert column.max is not None
    return f"{column.name}: above maximum {number(column.max)}"


def allowed_label(column: str) -> str:
    return f"{column}: value not allowed"


def allowed_suffix(column: Column) -> str:
    return f" (allowed: {', '.join(column.allowed or ())})"


def pattern_label(column: Column) -> str:
    return f"{column.name}: does not match pattern {column.pattern}"


def max_length_label(column: Column) -> str:
    return f"{column.name}: longer than {column.max_length} characters"


def decimals_label(column: Column) -> str:
    return f"{column.name}: more than {column.decimals} decimal places"


def unique_label(contract: Contract) -> str:
    return f"{','.join(contract.key)}: duplicate key"


def unique_message(contract: Contract, rows: int) -> str:
    return f"{unique_label(contract)} ({rows} rows in batch)"


def reference_label(column: str, dataset: str) -> str:
    return f"{column}: no such {dataset}"


MALFORMED_LABEL = "malformed row"


def malformed_message(expected_fields: int) -> str:
    return f"{MALFORMED_LABEL}: field count differs from the header's {expected_fields}"


# ----------------------------------------------------------------------------- plain-Python checks


def trim(raw: str | None) -> str | None:
    """Surrounding blanks removed; None when nothing is left."""
    if raw is None:
        return None
    value = raw.strip(TRIM_CHARS)
    return value or None


def parse(column: Column, value: str) -> object | None:
    """The typed value of trimmed text, or None when it is not a valid value of the type."""
    if column.type == "string":
        return value
    if not _COMPILED[column.type].match(value):
        return None
    if column.type in INT_RANGE:
        low, high = INT_RANGE[column.type]
        number_ = int(value)
        return number_ if low <= number_ <= high else None
    if column.type == "double":
        parsed = float(value)
        return parsed if math.isfinite(parsed) else None
    if column.type == "date":
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    if column.type == "timestamp":
        for pattern, replacement in TIMESTAMP_REWRITES:
            value = re.sub(pattern, replacement.replace("$", "\\"), value)
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    if column.type == "boolean":
        return value.lower() == "true"
    raise ValueError(f"unsupported column type {column.type!r}")


def fraction_digits(value: str) -> int:
    """Digits after the decimal point of the mantissa ('12.999' -> 3, '1.5e2' -> 1)."""
    mantissa = re.split(r"[eE]", value, maxsplit=1)[0]
    return len(mantissa.partition(".")[2])


def check_value(column: Column, raw: str | None) -> list[Violation]:
    """Every single-column rule of ``column`` against one raw cell."""
    value = trim(raw)
    name = column.name
    if value is None:
        return [Violation.of(REQUIRED, name, required_label(name), None)] if column.required else []
    typed = parse(column, value)
    if typed is None:
        return [Violation.of(TYPE, name, type_label(column), value, type_suffix(column, value))]
    out: list[Violation] = []
    if column.min is not None and typed < column.min:  # type: ignore[operator]
        out.append(Violation.of(MIN, name, min_label(column), value))
    if column.max is not None and typed > column.max:  # type: ignore[operator]
        out.append(Violation.of(MAX, name, max_label(column), value))
    if column.decimals is not None and fraction_digits(value) > column.decimals:
        out.append(Violation.of(DECIMALS, name, decimals_label(column), value))
    if column.allowed is not None and value not in column.allowed:
        out.append(Violation.of(ALLOWED, name, allowed_label(name), value, allowed_suffix(column)))
    if column.pattern is not None and not re.search(column.pattern, value):
        out.append(Violation.of(PATTERN, name, pattern_label(column), value))
    if column.max_length is not None and len(value) > column.max_length:
        label = max_length_label(column)
        out.append(Violation(MAX_LENGTH, name, value, f"{label}: {len(value)}", label))
    return out
