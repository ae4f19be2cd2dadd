"""Independent test oracle: dataset contracts and KPI definitions re-implemented in DuckDB SQL.

The Spark jobs (``spark.jobs``) and this module implement docs/kpis.md and the contract
YAMLs separately; tests compare the two. Nothing here imports from ``spark.jobs``: the
contract YAML files are read as the *spec*, every check is written out here.

Vocabulary:
    Batch = {"orders": [Path, ...], "order_items": [...], "products": [...], "order_lines": [...]}
    A run is an ordered list of batches; per dataset key the latest batch wins.

Entry points:
    load_valid(batch_or_batches) -> Oracle      (validated state after all batches)
    quarantined_keys(batch, prior=())           (rejected rows of the last batch, first reason)
    expected_kpis(batch, prior=())              (KPIs the last batch must write: its touched dates)
    expected_table_state(batches)               (OrderKPIs/CategoryKPIs contents after every batch)
"""

from __future__ import annotations

import csv
import decimal
import gzip
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import duckdb
import yaml

CONTRACTS_DIR = Path(__file__).resolve().parents[1] / "spark" / "jobs" / "contracts"

# Referenced datasets are validated first so their valid keys exist for the anti-joins.
DATASET_ORDER = ("orders", "products", "order_items", "order_lines")

Batch = Mapping[str, Sequence[Path | str]]
OrderKpis = dict[str, dict[str, Any]]  # order_date -> attributes
CategoryKpis = dict[tuple[str, str], dict[str, Any]]  # (category, order_date) -> attributes

# --- type recognisers -------------------------------------------------------------------
# TRY_CAST alone is too lenient for a spec (DuckDB rounds '1.5' to the BIGINT 2, accepts
# '0x10' and '1_000'), so every type has a lexical shape first and a TRY_CAST second.
_INT_RE = r"[+-]?[0-9]+"
_DOUBLE_RE = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"
_DATE_RE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
# Naive timestamps are UTC; an explicit UTC/Z/offset suffix is honoured (converted to UTC):
# "2025-08-01 10:00:00 UTC" (BigQuery's export), "...Z", "...+02", "...+0200", "...+02:00".
# The shape admits what a producer may write; DuckDB's own TIMESTAMPTZ cast decides the rest
# (it refuses "UTC" glued to the time, " Z", and a space before an offset). Zone names other
# than UTC are not accepted by the contract although DuckDB would read them.
_TS_RE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?( ?(UTC|Z|[+-][0-9]{2}(:?[0-9]{2})?))?"
# Seed 002: "returned: Boolean (true or false)"; case-insensitive, nothing else (no 1/0, yes/no).
_TRUE = ("true",)
_FALSE = ("false",)

MONEY = Decimal("0.01")
RATE = Decimal("0.0001")


class StructuralError(Exception):
    """The batch fails as a whole: nothing of it is merged (e.g. too many quarantined rows)."""


# --- contracts ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    name: str
    type: str
    required: bool = False
    min: Any = None
    max: Any = None
    allowed: tuple[str, ...] | None = None
    pattern: str | None = None
    max_length: int | None = None
    decimals: int | None = None


@dataclass(frozen=True)
class Reference:
    column: str
    dataset: str
    key: str


@dataclass(frozen=True)
class Contract:
    dataset: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    references: tuple[Reference, ...] = ()

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def load_contracts(directory: Path = CONTRACTS_DIR) -> dict[str, Contract]:
    contracts: dict[str, Contract] = {}
    for path in sorted(directory.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        columns = tuple(
            Column(
                name=name,
                type=c["type"],
                required=bool(c.get("required", False)),
                min=c.get("min"),
                max=c.get("max"),
                allowed=tuple(str(v) for v in c["allowed"]) if "allowed" in c else None,
                pattern=c.get("pattern"),
                max_length=c.get("max_length"),
                decimals=c.get("decimals"),
            )
            for name, c in spec["columns"].items()
        )
        refs = tuple(Reference(**r) for r in spec.get("references", []))
        contracts[spec["dataset"]] = Contract(spec["dataset"], tuple(spec["key"]), columns, refs)
    return contracts


# --- SQL building blocks --------------------------------------------------------------------
def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _typed_expr(col: Column) -> str:
    """SQL turning the raw VARCHAR into the contract type, NULL when it is not one."""
    v = _q(col.name)
    match col.type:
        case "long":
            return f"CASE WHEN regexp_full_match({v}, '{_INT_RE}') THEN TRY_CAST({v} AS BIGINT) END"
        case "int":
            return f"CASE WHEN regexp_full_match({v}, '{_INT_RE}') THEN TRY_CAST({v} AS INTEGER) END"
        case "double":
            return f"CASE WHEN regexp_full_match({v}, '{_DOUBLE_RE}') THEN TRY_CAST({v} AS DOUBLE) END"
        case "date":
            return f"CASE WHEN regexp_full_match({v}, '{_DATE_RE}') THEN TRY_CAST({v} AS DATE) END"
        case "timestamp":
            return f"CASE WHEN regexp_full_match({v}, '{_TS_RE}') THEN timezone('UTC', TRY_CAST({v} AS TIMESTAMPTZ)) END"
        case "boolean":
            t = ", ".join(_lit(x) for x in _TRUE)
            f = ", ".join(_lit(x) for x in _FALSE)
            return f"CASE WHEN lower(trim({v})) IN ({t}) THEN TRUE WHEN lower(trim({v})) IN ({f}) THEN FALSE END"
        case "string":
            return v
    raise ValueError(f"{col.name}: unknown contract type {col.type!r}")


def _reason_expr(contract: Contract) -> str:
    """First failing row-level rule, columns in contract order, rules in a fixed order per column.

    Rule order per column: required, type, min, max, decimals, allowed, pattern, max_length.
    """
    whens: list[str] = []
    for col in contract.columns:
        raw, typed = _q(col.name), _q(col.name + "__t")
        n = col.name
        if col.required:
            whens.append(f"WHEN {raw} IS NULL THEN {_lit(f'{n}: required value missing')}")
        whens.append(f"WHEN {raw} IS NOT NULL AND {typed} IS NULL THEN {_lit(f'{n}: not a valid {col.type}')}")
        if col.min is not None:
            whens.append(f"WHEN {typed} < {_lit(col.min)} THEN {_lit(f'{n}: below minimum {_bound(col.min)}')}")
        if col.max is not None:
            # NaN cannot appear (_DOUBLE_RE refuses it), so a plain comparison is enough.
            whens.append(f"WHEN {typed} > {_lit(col.max)} THEN {_lit(f'{n}: above maximum {_bound(col.max)}')}")
        if col.decimals is not None:
            whens.append(
                f"WHEN {typed} IS NOT NULL AND length(regexp_extract({raw}, '^[+-]?[0-9]*\\.([0-9]*)', 1)) > {col.decimals} "
                f"THEN {_lit(f'{n}: more than {col.decimals} decimal places')}"
            )
        if col.allowed is not None:
            allowed = ", ".join(_lit(a) for a in col.allowed)
            whens.append(f"WHEN {raw} IS NOT NULL AND {raw} NOT IN ({allowed}) THEN {_lit(f'{n}: value not allowed')}")
        if col.pattern is not None:
            whens.append(
                f"WHEN {raw} IS NOT NULL AND NOT regexp_full_match({raw}, {_lit(col.pattern)}) "
                f"THEN {_lit(f'{n}: does not match pattern')}"
            )
        if col.max_length is not None:
            whens.append(f"WHEN length({raw}) > {col.max_length} THEN {_lit(f'{n}: longer than {col.max_length} characters')}")
    return "CASE " + " ".join(whens) + " END"


def _bound(value: Any) -> str:
    """Bounds in reasons: 0.0 -> '0', 100000.0 -> '100000', 0.01 -> '0.01' (wording shared with the job)."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _read_header(path: Path) -> list[str]:
    """The header row. A ``.gz`` file is gzip (DuckDB's read_csv also decides by the extension);
    a UTF-8 byte-order mark (Excel's "CSV UTF-8") is not part of the first name."""
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8-sig") as fh:
        return next(csv.reader(fh), [])


# --- the oracle -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Rejected:
    batch: int
    dataset: str
    file: str
    key: tuple[str | None, ...]  # raw CSV text of the contract key columns
    reason: str
    line: int | None = None  # known for malformed rows only


@dataclass
class Oracle:
    """Validated state (latest batch wins) kept as DuckDB tables ``state_<dataset>``."""

    contracts: dict[str, Contract] = field(default_factory=load_contracts)
    con: duckdb.DuckDBPyConnection = field(default_factory=lambda: duckdb.connect(":memory:"))
    rejected: list[Rejected] = field(default_factory=list)
    rejected_files: list[tuple[str, str]] = field(default_factory=list)  # (path, problem)
    max_quarantined_share: float = 1.0  # a batch above it fails (Settings.max_quarantined_share)
    touched_dates: list[set[str]] = field(default_factory=list)  # per batch
    _n: int = 0
    _tmp: int = 0

    def __post_init__(self) -> None:
        self.con.execute("SET TimeZone = 'UTC'")
        for ds in DATASET_ORDER:
            self.con.execute(f"CREATE TABLE state_{ds} AS SELECT * FROM ({self._empty_typed(ds)})")

    # -- public ------------------------------------------------------------------------------
    def add_batch(self, batch: Batch) -> set[str]:
        """Validate one batch, merge its valid rows into the state; return its touched dates."""
        files = {ds: [Path(p) for p in batch.get(ds, ())] for ds in batch}
        for ds in files:
            if ds not in self.contracts:
                raise StructuralError(f"unknown dataset {ds!r}")
        # A file whose header is not its contract's is rejected as a whole; the batch goes on.
        for ds, paths in files.items():
            kept = []
            for p in paths:
                problem = self._header_problem(ds, p)
                if problem:
                    self.rejected_files.append((str(p), problem))
                else:
                    kept.append(p)
            files[ds] = kept
        i = self._n
        self._n += 1
        for ds in DATASET_ORDER:
            self._validate(i, ds, files.get(ds, []))
        bad = sum(1 for r in self.rejected if r.batch == i)
        total = bad + sum(self._count(f"SELECT count(*) FROM ok_{i}_{ds}") for ds in DATASET_ORDER)
        if total and bad / total > self.max_quarantined_share:
            raise StructuralError(f"batch {i}: {bad} of {total} rows quarantined, above {self.max_quarantined_share}")
        touched = self._touched_dates(i)
        for ds in DATASET_ORDER:
            self._merge(i, ds)
        self.touched_dates.append(touched)
        return touched

    def valid(self, dataset: str) -> duckdb.DuckDBPyRelation:
        """Current validated rows of a dataset (typed columns, latest batch wins)."""
        cols = ", ".join(_q(c.name) for c in self.contracts[dataset].columns)
        return self.con.sql(f"SELECT {cols} FROM state_{dataset}")

    def lines(self) -> duckdb.DuckDBPyRelation:
        return self.con.sql(_LINES_SQL)

    def kpis(self, dates: set[str] | None = None) -> tuple[OrderKpis, CategoryKpis]:
        """KPIs over all validated data; restricted to ``dates`` when given."""
        orders: OrderKpis = {}
        for d, n_orders, revenue, items, n_returned, n_customers in self.con.execute(_ORDER_KPIS_SQL).fetchall():
            orders[d] = {
                "total_orders": n_orders,
                "total_revenue": _money(revenue),
                "total_items_sold": int(items),
                "return_rate": _rate(n_returned, n_orders),
                "unique_customers": n_customers,
            }
        cats: CategoryKpis = {}
        for cat, d, revenue, n_orders, n_returned in self.con.execute(_CATEGORY_KPIS_SQL).fetchall():
            cats[(cat, d)] = {
                "daily_revenue": _money(revenue),
                "avg_order_value": _money(_div(revenue, n_orders)),
                "avg_return_rate": _rate(n_returned, n_orders),
            }
        if dates is not None:
            orders = {d: v for d, v in orders.items() if d in dates}
            cats = {k: v for k, v in cats.items() if k[1] in dates}
        return orders, cats

    # -- validation --------------------------------------------------------------------------
    def _header_problem(self, ds: str, path: Path) -> str | None:
        """The header must name exactly the contract's columns, each once (any order)."""
        header = [h.strip() for h in _read_header(path)]
        if len(set(header)) != len(header):
            return "duplicate column names in header"
        if set(header) != {c.name for c in self.contracts[ds].columns}:
            return "header is not the contract's columns"
        return None

    def _validate(self, i: int, ds: str, paths: list[Path]) -> None:
        contract = self.contracts[ds]
        raw = f"raw_{i}_{ds}"
        self._load_raw(i, ds, paths, raw)
        typed = ", ".join(f"{_typed_expr(c)} AS {_q(c.name + '__t')}" for c in contract.columns)
        self.con.execute(
            f"CREATE TEMP TABLE chk_{i}_{ds} AS SELECT *, {_reason_expr(contract)} AS reason FROM (SELECT *, {typed} FROM {raw})"
        )
        self._reject_duplicates(i, ds)
        for ref in contract.references:
            self._reject_dangling(i, ds, ref)
        key_raw = ", ".join(_q(k) for k in contract.key)
        for file, *rest in self.con.execute(
            f"SELECT file, {key_raw}, reason FROM chk_{i}_{ds} WHERE reason IS NOT NULL ORDER BY file, ord"
        ).fetchall():
            *key, reason = rest
            self.rejected.append(Rejected(i, ds, file, tuple(key), reason))
        # The batch's valid rows, typed, ready to merge (and to be referenced).
        typed_out = ", ".join(f"{_q(c.name + '__t')} AS {_q(c.name)}" for c in contract.columns)
        extra = self._decimal_columns(ds, "__dec")
        self.con.execute(
            f"CREATE TEMP TABLE ok_{i}_{ds} AS SELECT {typed_out}{extra}, {i} AS batch FROM chk_{i}_{ds} WHERE reason IS NULL"
        )

    def _load_raw(self, i: int, ds: str, paths: list[Path], target: str) -> None:
        """All files of one dataset as VARCHAR rows; malformed lines become rejects."""
        contract = self.contracts[ds]
        selects = []
        for p in paths:
            header = _read_header(p)
            self._tmp += 1
            rej, scan = f"rej_{self._tmp}", f"scan_{self._tmp}"
            columns = "{" + ", ".join(f"{_lit(h)}: 'VARCHAR'" for h in header) + "}"
            src = (
                f"read_csv({_lit(str(p))}, columns={columns}, header=true, auto_detect=false, delim=',', "
                f"compression='{'gzip' if p.name.endswith('.gz') else 'none'}', "
                f"quote='\"', escape='\"', strict_mode=true, null_padding=false, store_rejects=true, "
                f"rejects_table='{rej}', rejects_scan='{scan}')"
            )
            # Columns absent from the header are NULL (an optional column may be left out).
            # Values are trimmed and a blank value is a missing one.
            cols = ", ".join(
                (f"NULLIF(trim({_q(c.name)}), '') AS {_q(c.name)}" if c.name in header else f"NULL::VARCHAR AS {_q(c.name)}")
                for c in contract.columns
            )
            self.con.execute(f"CREATE TEMP TABLE file_{self._tmp} AS SELECT {cols}, row_number() OVER () AS ord FROM {src}")
            selects.append(f"SELECT {_lit(str(p))} AS file, * FROM file_{self._tmp}")
            self._collect_malformed(i, ds, p, header, rej)
        if not selects:
            cols = ", ".join(f"NULL::VARCHAR AS {_q(c.name)}" for c in contract.columns)
            selects.append(f"SELECT NULL::VARCHAR AS file, {cols}, 0::BIGINT AS ord WHERE false")
        self.con.execute(f"CREATE TEMP TABLE {target} AS " + " UNION ALL ".join(selects))

    def _collect_malformed(self, i: int, ds: str, path: Path, header: list[str], rej: str) -> None:
        # DuckDB may scan a file more than once (binding, then reading), so rejects repeat.
        key_pos = [header.index(k) for k in self.contracts[ds].key]
        for line, text in self.con.execute(f"SELECT DISTINCT line, csv_line FROM {rej} ORDER BY line").fetchall():
            fields = next(csv.reader([text]), [])
            key = tuple((fields[p] if p < len(fields) else None) for p in key_pos)
            self.rejected.append(Rejected(i, ds, str(path), key, "malformed row", int(line)))

    def _reject_duplicates(self, i: int, ds: str) -> None:
        """Every row of a key seen more than once in the batch is rejected: we cannot know which
        copy is right. All well-formed rows whose key parses count, even ones invalid for
        another reason (which keep that first reason)."""
        key = self.contracts[ds].key
        typed_key = ", ".join(_q(k + "__t") for k in key)
        usable = " AND ".join(f"{_q(k + '__t')} IS NOT NULL" for k in key)
        self.con.execute(
            f"UPDATE chk_{i}_{ds} SET reason = {_lit(','.join(key) + ': duplicate key')} "
            f"WHERE reason IS NULL AND ({typed_key}) IN ("
            f"SELECT ({typed_key}) FROM chk_{i}_{ds} WHERE {usable} GROUP BY ALL HAVING count(*) > 1)"
        )

    def _reject_dangling(self, i: int, ds: str, ref: Reference) -> None:
        """Anti-join against this batch's valid rows of the referenced dataset plus the state."""
        col, key = _q(ref.column + "__t"), _q(ref.key)
        self.con.execute(
            f"UPDATE chk_{i}_{ds} SET reason = {_lit(f'{ref.column}: no such {ref.dataset}')} "
            f"WHERE reason IS NULL AND {col} NOT IN ("
            f"SELECT {key} FROM ok_{i}_{ref.dataset} UNION SELECT {key} FROM state_{ref.dataset})"
        )

    # -- state -------------------------------------------------------------------------------
    def _merge(self, i: int, ds: str) -> None:
        key = self.contracts[ds].key
        match = " AND ".join(f"s.{_q(k)} IS NOT DISTINCT FROM n.{_q(k)}" for k in key)
        self.con.execute(f"DELETE FROM state_{ds} s WHERE EXISTS (SELECT 1 FROM ok_{i}_{ds} n WHERE {match})")
        self.con.execute(f"INSERT INTO state_{ds} BY NAME SELECT * FROM ok_{i}_{ds}")

    def _touched_dates(self, i: int) -> set[str]:
        """order_dates the batch's valid rows touch, before and after the batch (see kpis.md).

        orders: its created_at date, and the old version's date when it moved.
        order_items: the date of its order (new and old version), orders taken latest-wins.
        order_lines: its order_date, and the old version's date.
        products: every date on which an item of that product was ordered (its category
                  feeds CategoryKPIs), items and orders taken latest-wins.
        """
        sql = f"""
        WITH orders_now AS (
            SELECT order_id, created_at FROM ok_{i}_orders
            UNION ALL
            SELECT order_id, created_at FROM state_orders s
            WHERE order_id NOT IN (SELECT order_id FROM ok_{i}_orders)
        )
        SELECT DISTINCT d FROM (
            SELECT CAST(created_at AS DATE) AS d FROM ok_{i}_orders
            UNION ALL
            SELECT CAST(s.created_at AS DATE) FROM state_orders s JOIN ok_{i}_orders n USING (order_id)
            UNION ALL
            SELECT CAST(o.created_at AS DATE) FROM ok_{i}_order_items n JOIN orders_now o USING (order_id)
            UNION ALL
            SELECT CAST(o.created_at AS DATE) FROM state_order_items s
                JOIN ok_{i}_order_items n USING (id) JOIN orders_now o ON o.order_id = s.order_id
            UNION ALL
            SELECT CAST(o.created_at AS DATE) FROM ok_{i}_products p
                JOIN (SELECT id, product_id, order_id FROM ok_{i}_order_items
                      UNION ALL
                      SELECT id, product_id, order_id FROM state_order_items
                      WHERE id NOT IN (SELECT id FROM ok_{i}_order_items)) it ON it.product_id = p.id
                JOIN orders_now o ON o.order_id = it.order_id
            UNION ALL
            SELECT order_date FROM ok_{i}_order_lines
            UNION ALL
            SELECT s.order_date FROM state_order_lines s JOIN ok_{i}_order_lines n USING (order_id, product_id)
        ) WHERE d IS NOT NULL
        """
        return {d.isoformat() for (d,) in self.con.execute(sql).fetchall()}

    def _count(self, sql: str) -> int:
        """The value of a ``SELECT count(*) ...`` (always one row)."""
        row = self.con.execute(sql).fetchone()
        assert row is not None  # DuckDB types fetchone() as optional
        return int(row[0])

    def _empty_typed(self, ds: str) -> str:
        sql_type = {
            "long": "BIGINT", "int": "INTEGER", "double": "DOUBLE", "date": "DATE",
            "timestamp": "TIMESTAMP", "boolean": "BOOLEAN", "string": "VARCHAR",
        }  # fmt: skip
        cols = ", ".join(f"NULL::{sql_type[c.type]} AS {_q(c.name)}" for c in self.contracts[ds].columns)
        return f"SELECT {cols}{self._decimal_columns(ds, '__dec', empty=True)}, 0 AS batch WHERE false"

    def _decimal_columns(self, ds: str, suffix: str, empty: bool = False) -> str:
        """Exact DECIMAL twins of money columns: KPIs are summed exactly, never in binary floats."""
        out = []
        for c in self.contracts[ds].columns:
            if c.type != "double":
                continue
            name = _q(c.name + suffix)
            if empty:
                out.append(f", NULL::DECIMAL(38,10) AS {name}")
            else:
                raw = _q(c.name)
                out.append(f", COALESCE(TRY_CAST({raw} AS DECIMAL(38,10)), {_q(c.name + '__t')}::DECIMAL(38,10)) AS {name}")
        return "".join(out)


# The normalised relation of docs/kpis.md ("Order lines").
_LINES_SQL = """
SELECT 't:' || CAST(i.order_id AS VARCHAR) AS order_key,
       't:' || CAST(o.user_id AS VARCHAR)  AS customer_key,
       CAST(o.created_at AS DATE)          AS order_date,
       p.category                          AS category,
       1                                   AS quantity,
       i.sale_price__dec                   AS line_revenue,
       (i.status = 'Returned' OR i.returned_at IS NOT NULL OR o.status = 'Returned') AS returned
FROM state_order_items i
JOIN state_orders o   ON o.order_id = i.order_id
JOIN state_products p ON p.id = i.product_id
WHERE i.status <> 'Cancelled' AND o.status <> 'Cancelled'
UNION ALL
SELECT 'f:' || order_id, 'f:' || customer_id, order_date, category, quantity,
       quantity * unit_price__dec, returned
FROM state_order_lines
"""

_ORDER_KPIS_SQL = f"""
SELECT strftime(order_date, '%Y-%m-%d'), COUNT(DISTINCT order_key), SUM(line_revenue), SUM(quantity),
       COUNT(DISTINCT order_key) FILTER (WHERE returned), COUNT(DISTINCT customer_key)
FROM ({_LINES_SQL}) GROUP BY order_date ORDER BY order_date
"""

_CATEGORY_KPIS_SQL = f"""
SELECT category, strftime(order_date, '%Y-%m-%d'), SUM(line_revenue), COUNT(DISTINCT order_key),
       COUNT(DISTINCT order_key) FILTER (WHERE returned)
FROM ({_LINES_SQL}) GROUP BY category, order_date ORDER BY category, order_date
"""


# --- rounding (half-up, after aggregation) ----------------------------------------------------
_CTX = decimal.Context(prec=60, rounding=ROUND_HALF_UP)


def _div(a: Decimal | int, b: Decimal | int) -> Decimal:
    return _CTX.divide(Decimal(a), Decimal(b))


def _money(x: Decimal | int) -> Decimal:
    return Decimal(x).quantize(MONEY, rounding=ROUND_HALF_UP)


def _rate(num: int, den: int) -> Decimal:
    return _div(num, den).quantize(RATE, rounding=ROUND_HALF_UP)


# --- module-level API ---------------------------------------------------------------------------
def _as_batches(batches: Batch | Sequence[Batch]) -> list[Batch]:
    return [batches] if isinstance(batches, Mapping) else list(batches)


def load_valid(batches: Batch | Sequence[Batch]) -> Oracle:
    """Validate one batch or an ordered list of batches; the Oracle holds the merged state.

    ``oracle.valid("orders")`` etc. are DuckDB relations; ``oracle.con`` is the connection.
    Raises StructuralError when a batch is structurally broken.
    """
    oracle = Oracle()
    for b in _as_batches(batches):
        oracle.add_batch(b)
    return oracle


def quarantined_keys(batch: Batch, prior: Sequence[Batch] = ()) -> list[Rejected]:
    """Rows of ``batch`` that are rejected (after ``prior`` batches were applied), first reason."""
    oracle = load_valid([*prior, batch])
    last = len(prior)
    return [r for r in oracle.rejected if r.batch == last]


def expected_kpis(batch: Batch, prior: Sequence[Batch] = (), *, all_dates: bool = False) -> tuple[OrderKpis, CategoryKpis]:
    """The KPI rows ``batch`` must write: every date it touches, from all validated data.

    A touched date that has no lines any more is absent from the result (its rows are
    deleted); ``all_dates`` returns every date instead of the touched ones.
    """
    oracle = load_valid([*prior, batch])
    return oracle.kpis(None if all_dates else oracle.touched_dates[-1])


def expected_table_state(
    batches: Sequence[Batch],
    *,
    skip_failed: bool = False,
    max_quarantined_share: float = 1.0,
    contracts: dict[str, Contract] | None = None,
) -> tuple[OrderKpis, CategoryKpis]:
    """OrderKPIs/CategoryKPIs contents after running ``batches`` in order.

    Each batch replaces the rows of its touched dates (and removes rows of those dates that
    no longer exist); other dates keep what an earlier batch wrote. A batch quarantining more
    than ``max_quarantined_share`` of its rows fails and writes nothing when ``skip_failed``;
    otherwise StructuralError propagates.
    """
    oracle = Oracle(contracts=contracts or load_contracts(), max_quarantined_share=max_quarantined_share)
    orders: OrderKpis = {}
    cats: CategoryKpis = {}
    for b in batches:
        try:
            touched = oracle.add_batch(b)
        except StructuralError:
            if skip_failed:
                continue
            raise
        new_orders, new_cats = oracle.kpis(touched)
        orders = {d: v for d, v in orders.items() if d not in touched} | new_orders
        cats = {k: v for k, v in cats.items() if k[1] not in touched} | new_cats
    return dict(sorted(orders.items())), dict(sorted(cats.items()))


def batch_from_dir(root: Path, datasets: Sequence[str] = DATASET_ORDER) -> dict[str, list[Path]]:
    """{dataset: sorted CSVs} for a folder laid out like raw/ (root/<dataset>/*.csv)."""
    out = {ds: sorted([*(root / ds).glob("*.csv"), *(root / ds).glob("*.csv.gz")]) for ds in datasets if (root / ds).is_dir()}
    return {ds: ps for ds, ps in out.items() if ps}
