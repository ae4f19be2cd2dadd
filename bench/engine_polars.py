"""The contracts and docs/kpis.md in polars, for one batch into an empty lake (what the bench measures).

Validation: every file is read with an all-string schema from its own header; a row whose
field count differs from the header's is malformed (found by a second, raw-line read of the
file: polars pads short rows silently). Every contract rule becomes one boolean column of a
single lazy projection (no per-rule pass); duplicate keys and references are a group count
and a semi-join. KPIs: the order-lines relation of docs/kpis.md, aggregated in integer cents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from bench import kpimath as km

_NULL_BOOL = pl.lit(False)


def _trimmed(name: str) -> pl.Expr:
    value = pl.col(name).str.strip_chars(" \t")
    return pl.when(value != "").then(value)


_TS_FORMATS = ("%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M")
_TS_PARTS = r"^(.*?)(?: ?(?:UTC|Z)|([+-][0-9]{2}):?([0-9]{2})?)?$"


def _timestamp(value: pl.Expr) -> pl.Expr:
    """Naive = UTC; 'Z'/'UTC' suffixes dropped; +HH[:MM] offsets converted to UTC."""
    text = value.str.replace(r"^([0-9]{4}-[0-9]{2}-[0-9]{2})T", "${1} ")
    plain = text.str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="us")
    parts = text.str.extract_groups(_TS_PARTS)
    base = parts.struct.field("1")
    parsed = pl.coalesce([base.str.to_datetime(f, strict=False, time_unit="us") for f in _TS_FORMATS])
    hours = parts.struct.field("2").cast(pl.Int64, strict=False)
    minutes = parts.struct.field("3").cast(pl.Int64, strict=False).fill_null(0)
    shift = pl.duration(minutes=hours * 60 + hours.sign() * minutes)
    general = pl.when(hours.is_null()).then(parsed).otherwise(parsed - shift)
    return pl.coalesce([plain, general])


def typed(col: Any) -> pl.Expr:
    """The trimmed text parsed as the contract type; NULL when blank or not a value of the type."""
    raw = _trimmed(col.name)
    match col.type:
        case "string":
            return raw
        case "int" | "long":
            lo, hi = km.INT_RANGE[col.type]
            number = raw.str.strip_prefix("+").cast(pl.Int64, strict=False)
            number = pl.when(raw.str.contains(km.INT_RE)).then(number)
            return pl.when(number.is_between(lo, hi)).then(number).cast(pl.Int32 if col.type == "int" else pl.Int64)
        case "double":
            value = raw.cast(pl.Float64, strict=False)
            return pl.when(raw.str.contains(km.DOUBLE_RE) & value.is_finite()).then(value)
        case "date":
            return pl.when(raw.str.contains(km.DATE_RE)).then(raw.str.to_date("%Y-%m-%d", strict=False))
        case "timestamp":
            return pl.when(raw.str.contains(km.TS_RE)).then(_timestamp(raw))
        case "boolean":
            low = raw.str.to_lowercase()
            return pl.when(low == "true").then(True).when(low == "false").then(False)
    raise ValueError(f"{col.name}: unknown type {col.type!r}")


def rule_failures(col: Any) -> list[pl.Expr]:
    """One boolean per rule of the column: true when the row breaks it."""
    raw, value = _trimmed(col.name), pl.col(f"{col.name}__t")
    present, valid = raw.is_not_null(), value.is_not_null()
    out = []
    if col.required:
        out.append(~present)
    out.append(present & ~valid)
    if col.min is not None:
        out.append(valid & (value < col.min))
    if col.max is not None:
        out.append(valid & (value > col.max))
    if col.decimals is not None:
        out.append(valid & (raw.str.extract(km.DECIMALS_RE, 1).str.len_chars().fill_null(0) > col.decimals))
    if col.allowed is not None:
        out.append(present & ~raw.is_in(list(col.allowed)))
    if col.pattern is not None:
        out.append(present & ~raw.str.contains(col.pattern))
    if col.max_length is not None:
        out.append(present & (raw.str.len_chars() > col.max_length))
    return out


def _header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig") as fh:
        return [h.strip() for h in fh.readline().rstrip("\r\n").split(",")]


def read_raw(contract: Any, paths: list[Path]) -> pl.LazyFrame:
    """All files of a dataset as strings, contract column order, with a ``_malformed`` flag."""
    frames = []
    for path in paths:
        header = _header(path)
        frame = pl.scan_csv(
            path,
            has_header=True,
            schema=dict.fromkeys(header, pl.String),
            empty_string_is_null=False,
            quote_char='"',
            truncate_ragged_lines=True,
        )
        # The same file as raw lines: fields = commas outside quoted sections + 1.
        lines = pl.scan_csv(
            path,
            has_header=False,
            skip_lines=1,
            schema={"_line": pl.String},
            separator="\x1f",
            quote_char=None,
            empty_string_is_null=False,
        )
        fields = pl.col("_line").str.replace_all(r'"([^"]|"")*"', "").str.count_matches(",") + 1
        flags = lines.select((fields != len(header)).alias("_malformed"))
        cols = [pl.col(c.name) if c.name in header else pl.lit(None, pl.String).alias(c.name) for c in contract.columns]
        frames.append(pl.concat([frame.select(cols), flags], how="horizontal"))
    return pl.concat(frames, how="vertical")


def validate(contract: Any, paths: list[Path], valid_keys: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Typed rows with ``_ok`` (passes every rule, is no duplicate, references resolve)."""
    frame = read_raw(contract, paths).with_columns(typed(c).alias(f"{c.name}__t") for c in contract.columns)
    failures = [f for c in contract.columns for f in rule_failures(c)]
    key = [f"{k}__t" for k in contract.key]
    usable = ~pl.col("_malformed") & pl.all_horizontal(pl.col(k).is_not_null() for k in key)
    duplicate = usable & (usable.cast(pl.Int32).sum().over(key) > 1)
    bad = pl.any_horizontal([f.fill_null(False) for f in failures] + [duplicate])
    for ref in contract.references:
        found = pl.col(f"{ref.column}__t").is_in(valid_keys[ref.dataset].get_column(ref.key).implode())
        bad = bad | (pl.col(f"{ref.column}__t").is_not_null() & ~found)
    ok = ~pl.col("_malformed") & ~bad
    typed_cols = [pl.col(f"{c.name}__t").alias(c.name) for c in contract.columns]
    return frame.select(*typed_cols, ok.alias("_ok")).collect()


def run(batch: dict[str, list[Path]]) -> tuple[dict[str, Any], dict[str, pl.DataFrame]]:
    """Validation: per dataset counts and the valid rows."""
    contracts = km.load_contracts()
    valid: dict[str, pl.DataFrame] = {}
    counts: dict[str, dict[str, int]] = {}
    for ds in km.DATASET_ORDER:
        if not batch.get(ds):
            continue
        checked = validate(contracts[ds], batch[ds], valid)
        n_ok = int(checked.get_column("_ok").sum())
        counts[ds] = {"valid": n_ok, "quarantined": checked.height - n_ok}
        valid[ds] = checked.filter(pl.col("_ok")).drop("_ok")
    return counts, valid


def _cents(expr: pl.Expr) -> pl.Expr:
    return (expr * 100).round(0).cast(pl.Int64)


def lines(valid: dict[str, pl.DataFrame]) -> pl.LazyFrame | None:
    """The order-lines relation of docs/kpis.md (one batch into an empty lake: no older versions)."""
    parts = []
    if all(ds in valid for ds in ("orders", "order_items", "products")):
        o = valid["orders"].lazy().select("order_id", "user_id", "created_at", pl.col("status").alias("o_status"))
        p = valid["products"].lazy().select(pl.col("id").alias("product_id"), "category")
        i = valid["order_items"].lazy().select("order_id", "product_id", "status", "returned_at", "sale_price")
        joined = i.join(o, on="order_id").join(p, on="product_id")
        parts.append(
            joined.filter((pl.col("status") != "Cancelled") & (pl.col("o_status") != "Cancelled")).select(
                ("t:" + pl.col("order_id").cast(pl.String)).alias("order_key"),
                ("t:" + pl.col("user_id").cast(pl.String)).alias("customer_key"),
                pl.col("created_at").dt.date().alias("order_date"),
                pl.col("category"),
                pl.lit(1, pl.Int64).alias("quantity"),
                _cents(pl.col("sale_price")).alias("cents"),
                (
                    (pl.col("status") == "Returned") | pl.col("returned_at").is_not_null() | (pl.col("o_status") == "Returned")
                ).alias("returned"),
            )
        )
    if "order_lines" in valid:
        f = valid["order_lines"].lazy()
        parts.append(
            f.select(
                ("f:" + pl.col("order_id")).alias("order_key"),
                ("f:" + pl.col("customer_id")).alias("customer_key"),
                pl.col("order_date"),
                pl.col("category"),
                pl.col("quantity").cast(pl.Int64),
                (pl.col("quantity").cast(pl.Int64) * _cents(pl.col("unit_price"))).alias("cents"),
                pl.col("returned"),
            )
        )
    return pl.concat(parts, how="vertical") if parts else None


def touched_dates(valid: dict[str, pl.DataFrame]) -> list[str]:
    """A first batch touches the dates of its valid orders and flat lines."""
    dates: set[str] = set()
    if "orders" in valid:
        dates |= {d.isoformat() for d in valid["orders"].get_column("created_at").dt.date().unique() if d is not None}
    if "order_lines" in valid:
        dates |= {d.isoformat() for d in valid["order_lines"].get_column("order_date").unique() if d is not None}
    return sorted(dates)


def kpis(valid: dict[str, pl.DataFrame]) -> tuple[list[str], dict[str, Any], dict[Any, Any]]:
    touched = touched_dates(valid)
    rel = lines(valid)
    if rel is None:
        return touched, {}, {}
    rel = rel.with_columns(pl.col("order_date").dt.to_string("%Y-%m-%d")).filter(pl.col("order_date").is_in(touched))
    returned_orders = pl.col("order_key").filter(pl.col("returned")).n_unique()
    per_date, per_cat = pl.collect_all(
        [
            rel.group_by("order_date").agg(
                pl.col("order_key").n_unique(),
                pl.col("cents").sum(),
                pl.col("quantity").sum(),
                returned_orders.alias("returned"),
                pl.col("customer_key").n_unique(),
            ),
            rel.group_by("category", "order_date").agg(
                pl.col("cents").sum(), pl.col("order_key").n_unique(), returned_orders.alias("returned")
            ),
        ]
    )
    return touched, km.order_kpi_rows(per_date.rows()), km.category_kpi_rows(per_cat.rows())
