"""The contracts and docs/kpis.md in DuckDB SQL, written for speed (tests/oracle.py is written for clarity).

One batch into an empty lake, like engine_polars: per dataset ONE ``CREATE TABLE ... AS``
reads the CSVs (all VARCHAR, malformed rows go to DuckDB's rejects table), types every
column, computes every rule flag, the duplicate-key window count and the reference
semi-joins in a single statement; the KPIs are two GROUP BY queries over the order-lines
relation with money in integer cents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from bench import kpimath as km
from bench.common import one_row


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _typed(col: Any) -> str:
    v = _q(col.name)
    match col.type:
        case "long":
            return f"CASE WHEN regexp_full_match({v}, {_lit(km.INT_RE[1:-1])}) THEN TRY_CAST({v} AS BIGINT) END"
        case "int":
            return f"CASE WHEN regexp_full_match({v}, {_lit(km.INT_RE[1:-1])}) THEN TRY_CAST({v} AS INTEGER) END"
        case "double":
            return f"CASE WHEN regexp_full_match({v}, {_lit(km.DOUBLE_RE[1:-1])}) THEN TRY_CAST({v} AS DOUBLE) END"
        case "date":
            return f"CASE WHEN regexp_full_match({v}, {_lit(km.DATE_RE[1:-1])}) THEN TRY_CAST({v} AS DATE) END"
        case "timestamp":
            return (
                f"CASE WHEN regexp_full_match({v}, {_lit(km.TS_RE[1:-1])}) THEN timezone('UTC', TRY_CAST({v} AS TIMESTAMPTZ)) END"
            )
        case "boolean":
            return f"CASE lower({v}) WHEN 'true' THEN TRUE WHEN 'false' THEN FALSE END"
        case "string":
            return v
    raise ValueError(f"{col.name}: unknown type {col.type!r}")


def _failures(col: Any) -> list[str]:
    raw, t = _q(col.name), _q(col.name + "__t")
    out = []
    if col.required:
        out.append(f"{raw} IS NULL")
    out.append(f"({raw} IS NOT NULL AND {t} IS NULL)")
    if col.min is not None:
        out.append(f"coalesce({t} < {_lit(col.min)}, false)")
    if col.max is not None:
        out.append(f"coalesce({t} > {_lit(col.max)}, false)")
    if col.decimals is not None:
        out.append(f"({t} IS NOT NULL AND length(regexp_extract({raw}, {_lit(km.DECIMALS_RE)}, 1)) > {col.decimals})")
    if col.allowed is not None:
        out.append(f"({raw} IS NOT NULL AND {raw} NOT IN ({', '.join(_lit(a) for a in col.allowed)}))")
    if col.pattern is not None:
        out.append(f"({raw} IS NOT NULL AND NOT regexp_matches({raw}, {_lit(col.pattern)}))")
    if col.max_length is not None:
        out.append(f"coalesce(length({raw}) > {col.max_length}, false)")
    return out


def _header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig") as fh:
        return [h.strip() for h in fh.readline().rstrip("\r\n").split(",")]


class Engine:
    def __init__(self, threads: int) -> None:
        self.con = duckdb.connect(":memory:", config={"threads": threads})
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET enable_progress_bar = false")
        self.contracts = km.load_contracts()
        self.counts: dict[str, dict[str, int]] = {}
        self._n = 0

    def _source(self, contract: Any, path: Path) -> tuple[str, str]:
        """(SELECT of one file's contract columns, trimmed, blank = NULL; its rejects table)."""
        self._n += 1
        header = _header(path)
        rej = f"rej_{self._n}"
        columns = "{" + ", ".join(f"{_lit(h)}: 'VARCHAR'" for h in header) + "}"
        src = (
            f"read_csv({_lit(str(path))}, columns={columns}, header=true, auto_detect=false, delim=',', "
            f"quote='\"', escape='\"', strict_mode=true, null_padding=false, store_rejects=true, "
            f"rejects_table='{rej}', rejects_scan='scan_{self._n}')"
        )
        cols = ", ".join(
            (f"NULLIF(trim({_q(c.name)}, ' \t'), '') AS {_q(c.name)}" if c.name in header else f"NULL::VARCHAR AS {_q(c.name)}")
            for c in contract.columns
        )
        return f"SELECT {cols} FROM {src}", rej

    def validate(self, ds: str, paths: list[Path]) -> None:
        contract = self.contracts[ds]
        sources = [self._source(contract, p) for p in paths]
        union = " UNION ALL ".join(s for s, _ in sources)
        typed = ", ".join(f"{_typed(c)} AS {_q(c.name + '__t')}" for c in contract.columns)
        key = ", ".join(_q(k + "__t") for k in contract.key)
        usable = " AND ".join(f"{_q(k + '__t')} IS NOT NULL" for k in contract.key)
        bad = [f for c in contract.columns for f in _failures(c)]
        bad.append(f"({usable} AND count(*) FILTER (WHERE {usable}) OVER (PARTITION BY {key}) > 1)")
        for ref in contract.references:
            col = _q(ref.column + "__t")
            bad.append(f"({col} IS NOT NULL AND {col} NOT IN (SELECT {_q(ref.key)} FROM valid_{ref.dataset}))")
        out = ", ".join(f"{_q(c.name + '__t')} AS {_q(c.name)}" for c in contract.columns)
        self.con.execute(
            f"CREATE TEMP TABLE chk_{ds} AS SELECT {out}, NOT ({' OR '.join(bad)}) AS ok FROM (SELECT *, {typed} FROM ({union}))"
        )
        self.con.execute(f"CREATE TEMP TABLE valid_{ds} AS SELECT * EXCLUDE (ok) FROM chk_{ds} WHERE ok")
        valid, checked = one_row(self.con, f"SELECT count(*) FILTER (WHERE ok), count(*) FROM chk_{ds}")
        malformed = sum(one_row(self.con, f"SELECT count(DISTINCT line) FROM {rej}")[0] for _, rej in sources)
        self.counts[ds] = {"valid": valid, "quarantined": checked - valid + malformed}
        self.con.execute(f"DROP TABLE chk_{ds}")

    def run(self, batch: dict[str, list[Path]]) -> dict[str, dict[str, int]]:
        for ds in km.DATASET_ORDER:
            if batch.get(ds):
                self.validate(ds, batch[ds])
        return self.counts

    def kpis(self) -> tuple[list[str], dict[str, Any], dict[Any, Any]]:
        have = set(self.counts)
        parts, touched = [], []
        if {"orders", "order_items", "products"} <= have:
            parts.append(
                """SELECT 't:' || i.order_id AS order_key, 't:' || o.user_id AS customer_key,
                          CAST(o.created_at AS DATE) AS order_date, p.category, 1 AS quantity,
                          round(i.sale_price * 100)::BIGINT AS cents,
                          (i.status = 'Returned' OR i.returned_at IS NOT NULL OR o.status = 'Returned') AS returned
                   FROM valid_order_items i JOIN valid_orders o USING (order_id) JOIN valid_products p ON p.id = i.product_id
                   WHERE i.status <> 'Cancelled' AND o.status <> 'Cancelled'"""
            )
        if "orders" in have:
            touched.append("SELECT CAST(created_at AS DATE) AS d FROM valid_orders")
        if "order_lines" in have:
            parts.append(
                """SELECT 'f:' || order_id AS order_key, 'f:' || customer_id AS customer_key, order_date, category,
                          quantity, quantity * round(unit_price * 100)::BIGINT AS cents, returned FROM valid_order_lines"""
            )
            touched.append("SELECT order_date AS d FROM valid_order_lines")
        if not touched:
            return [], {}, {}
        dates = sorted(
            d.isoformat()
            for (d,) in self.con.execute(f"SELECT DISTINCT d FROM ({' UNION ALL '.join(touched)}) WHERE d IS NOT NULL").fetchall()
        )
        if not parts:
            return dates, {}, {}
        self.con.execute(f"CREATE TEMP TABLE lines AS {' UNION ALL '.join(parts)}")
        per_date = self.con.execute(
            """SELECT strftime(order_date, '%Y-%m-%d'), count(DISTINCT order_key), sum(cents), sum(quantity),
                      count(DISTINCT order_key) FILTER (WHERE returned), count(DISTINCT customer_key)
               FROM lines GROUP BY order_date"""
        ).fetchall()
        per_cat = self.con.execute(
            """SELECT category, strftime(order_date, '%Y-%m-%d'), sum(cents), count(DISTINCT order_key),
                      count(DISTINCT order_key) FILTER (WHERE returned)
               FROM lines GROUP BY category, order_date"""
        ).fetchall()
        wanted = set(dates)
        order_rows = km.order_kpi_rows([r for r in per_date if r[0] in wanted])
        category_rows = km.category_kpi_rows([r for r in per_cat if r[1] in wanted])
        return dates, order_rows, category_rows

    def close(self) -> None:
        self.con.close()
