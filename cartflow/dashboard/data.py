"""The dashboard's view model, built from Deps: KPIs, the batch timeline, per-file outcomes.

Everything comes from the pipeline's own read models (cartflow.ops.views) and, when the
optional ``deltalake`` package is installed (the ``dashboard`` extra), from the Delta
``kpis/`` tables and ``quarantine/`` tables. The pure helpers (``*_rows``, ``batch_row``,
``compare_kpis``...) take plain values so they are unit-tested without AWS.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from cartflow.core.batch_table import Chunk, is_lock
from cartflow.core.deps import Deps
from cartflow.core.models import KPIS_PREFIX, QUARANTINE_PREFIX, BatchStatus, DataType, ValidationResult
from cartflow.ops import views

ORDER_ATTRS = ("total_orders", "total_revenue", "total_items_sold", "return_rate", "unique_customers")
CATEGORY_ATTRS = ("daily_revenue", "avg_order_value", "avg_return_rate")
TERMINAL_BATCH = frozenset({BatchStatus.DONE.value, BatchStatus.FAILED.value})
DELTA_KPI_TABLES = ("order_kpis", "category_kpis")


# ----------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class OrderRow:
    order_date: str
    total_orders: int
    total_revenue: Decimal
    total_items_sold: int
    return_rate: Decimal
    unique_customers: int
    updated_by_batch: str | None = None


@dataclass(frozen=True)
class CategoryRow:
    category: str
    order_date: str
    daily_revenue: Decimal
    avg_order_value: Decimal
    avg_return_rate: Decimal
    updated_by_batch: str | None = None


@dataclass(frozen=True)
class BatchRow:
    batch_id: str
    group_key: str
    status: str
    attempt: int
    files: int
    created_at: float  # epoch seconds
    started_at: float | None
    finished_at: float | None
    duration_seconds: float | None  # processing start (or creation) -> finish (or now, while in flight)
    quarantined_share: float | None  # from the batch's validation result, once it has one
    rejected_files: int
    error: str | None


@dataclass(frozen=True)
class FileRow:
    key: str  # the raw key, without the bucket
    dataset: str
    state: str
    batch_id: str | None
    reason: str | None
    quarantined_rows: int | None
    arrived_at: float | None
    quarantine_reasons: dict[str, int] = field(default_factory=dict)  # rule -> rows (Delta quarantine/)


@dataclass(frozen=True)
class DeltaTableInfo:
    name: str  # e.g. kpis/order_kpis
    version: int | None
    rows: int


@dataclass(frozen=True)
class DeltaView:
    available: bool
    note: str  # why not available, or what was compared
    tables: tuple[DeltaTableInfo, ...] = ()
    agrees_with_dynamodb: bool | None = None
    mismatches: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dashboard:
    generated_at: float
    bucket: str
    order_kpis: tuple[OrderRow, ...]
    category_kpis: tuple[CategoryRow, ...]
    batches: tuple[BatchRow, ...]
    files: tuple[FileRow, ...]
    delta: DeltaView
    error: str | None = None  # the pipeline could not be read (endpoint down...): shown, not raised

    @property
    def categories(self) -> list[str]:
        return sorted({r.category for r in self.category_kpis})

    @property
    def dates(self) -> list[str]:
        return sorted({r.order_date for r in self.category_kpis} | {r.order_date for r in self.order_kpis})

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values: Decimals as strings (exact), times as epoch seconds."""
        return _jsonable({**asdict(self), "categories": self.categories, "dates": self.dates})


def _jsonable(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


# ----------------------------------------------------------------------------- pure helpers


def _dec(v: Any) -> Decimal:
    return v if isinstance(v, Decimal) else Decimal(str(v))


def _iso_date(v: Any) -> str:
    return v.isoformat() if isinstance(v, date) else str(v)


def order_rows(items: Iterable[Mapping[str, Any]]) -> tuple[OrderRow, ...]:
    """OrderKPIs items (DynamoDB or Delta rows) -> rows sorted by date."""
    rows = [
        OrderRow(
            order_date=_iso_date(i["order_date"]),
            total_orders=int(i["total_orders"]),
            total_revenue=_dec(i["total_revenue"]),
            total_items_sold=int(i["total_items_sold"]),
            return_rate=_dec(i["return_rate"]),
            unique_customers=int(i["unique_customers"]),
            updated_by_batch=i.get("updated_by_batch"),
        )
        for i in items
    ]
    return tuple(sorted(rows, key=lambda r: r.order_date))


def category_rows(items: Iterable[Mapping[str, Any]]) -> tuple[CategoryRow, ...]:
    """CategoryKPIs items (DynamoDB or Delta rows) -> rows sorted by (date, category)."""
    rows = [
        CategoryRow(
            category=str(i["category"]),
            order_date=_iso_date(i["order_date"]),
            daily_revenue=_dec(i["daily_revenue"]),
            avg_order_value=_dec(i["avg_order_value"]),
            avg_return_rate=_dec(i["avg_return_rate"]),
            updated_by_batch=i.get("updated_by_batch"),
        )
        for i in items
    ]
    return tuple(sorted(rows, key=lambda r: (r.order_date, r.category)))


def epoch_seconds(value: Any) -> float | None:
    """A chunk timestamp -> epoch seconds: ms numbers (our writers) or ISO strings (the state
    machine's ``$$.State.EnteredTime``); None when absent or unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float | Decimal):
        return float(value) / 1000.0
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def batch_row(item: Mapping[str, Any], now: float, result: ValidationResult | None) -> BatchRow:
    """One batch_chunks item (plain values) + its validation result, if any -> a timeline row."""
    chunk = Chunk.from_dict(dict(item))
    created = chunk.created_at / 1000.0
    started = chunk.processing_started_at / 1000.0 if chunk.processing_started_at else None
    finished = epoch_seconds(item.get("finished_at")) if chunk.status in TERMINAL_BATCH else None
    begin = started if started is not None else created
    if finished is not None:
        duration: float | None = max(0.0, finished - begin)
    elif chunk.status == BatchStatus.PROCESSING.value:
        duration = max(0.0, now - begin)
    else:
        duration = None
    share: float | None = None
    rejected = 0
    if result is not None:
        share = float(result.quarantined_share)
        rejected = len(result.rejected_files)
    else:
        outcomes = views.outcomes_of(chunk)
        if outcomes:
            rows = sum(o.rows for o in outcomes.values())
            share = round(sum(o.quarantined_rows for o in outcomes.values()) / rows, 4) if rows else 0.0
            rejected = sum(1 for o in outcomes.values() if o.status == "rejected")
    return BatchRow(
        batch_id=chunk.batch_id,
        group_key=chunk.group_key,
        status=chunk.status,
        attempt=chunk.attempt,
        files=len(chunk.file_paths),
        created_at=created,
        started_at=started,
        finished_at=finished,
        duration_seconds=duration,
        quarantined_share=share,
        rejected_files=rejected,
        error=chunk.error,
    )


def raw_key(s3_path: str) -> str:
    """s3://bucket/raw/orders/x.csv -> raw/orders/x.csv"""
    return s3_path.split("/", 3)[-1] if s3_path.startswith("s3://") else s3_path


def dataset_of(key: str) -> str:
    parts = key.split("/")
    return parts[1] if len(parts) > 2 and parts[0] == "raw" else ""


def file_rows(states: Iterable[views.FileState], quarantine: Mapping[str, Mapping[str, int]]) -> tuple[FileRow, ...]:
    """Per-file outcomes; ``quarantine`` maps an s3 path to its quarantine reasons and counts."""
    rows = []
    for f in states:
        key = raw_key(f.s3_path)
        rows.append(
            FileRow(
                key=key,
                dataset=dataset_of(key),
                state=f.state,
                batch_id=f.batch_id,
                reason=f.reason,
                quarantined_rows=f.quarantined_rows,
                arrived_at=f.arrived_at,
                quarantine_reasons=dict(sorted(quarantine.get(f.s3_path, {}).items())),
            )
        )
    return tuple(sorted(rows, key=lambda r: (r.arrived_at or 0.0, r.key)))


def quarantine_reasons(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Quarantine Delta rows (source_file, reason) -> {source_file: {rule: rows}}.

    A row's reason is ``<rule>: <detail>`` (docs/validation.md); the rule is what is counted,
    so "123 rows: price out of range" reads as one line per rule, not per value."""
    out: dict[str, Counter[str]] = {}
    for r in rows:
        source, reason = r.get("source_file"), r.get("reason")
        if not source or not reason:
            continue
        rule = str(reason).split(":", 1)[0].strip()
        out.setdefault(str(source).replace("s3a://", "s3://", 1), Counter())[rule] += 1
    return {k: dict(v) for k, v in out.items()}


def compare_kpis(
    dynamo_orders: Sequence[OrderRow],
    dynamo_categories: Sequence[CategoryRow],
    delta_orders: Sequence[OrderRow],
    delta_categories: Sequence[CategoryRow],
) -> list[str]:
    """Every key or value on which the Delta copy and DynamoDB differ (empty: they agree)."""
    orders = _diff("OrderKPIs", ORDER_ATTRS, {r.order_date: r for r in dynamo_orders}, {r.order_date: r for r in delta_orders})
    categories = _diff(
        "CategoryKPIs",
        CATEGORY_ATTRS,
        {f"{r.category} {r.order_date}": r for r in dynamo_categories},
        {f"{r.category} {r.order_date}": r for r in delta_categories},
    )
    return orders + categories


def _diff(label: str, attrs: Sequence[str], left: Mapping[str, object], right: Mapping[str, object]) -> list[str]:
    out = [f"{label} {k}: in DynamoDB only" for k in sorted(set(left) - set(right))]
    out += [f"{label} {k}: in Delta only" for k in sorted(set(right) - set(left))]
    for k in sorted(set(left) & set(right)):
        for a in attrs:
            lv, rv = getattr(left[k], a), getattr(right[k], a)
            if _dec(lv) != _dec(rv):
                out.append(f"{label} {k} {a}: DynamoDB {lv} != Delta {rv}")
    return out


# ----------------------------------------------------------------------------- Delta


class DeltaReader:
    """Reads the Delta tables under the bucket with the ``deltalake`` package (no Spark).

    Rows are cached per table version: a poll costs one log lookup per table while
    nothing changed."""

    def __init__(self, deps: Deps) -> None:
        import deltalake  # noqa: F401 - ImportError here means "not installed": the caller reports it

        self.deps = deps
        self._cache: dict[str, tuple[int, list[dict[str, Any]]]] = {}

    def storage_options(self) -> dict[str, str]:
        import boto3

        s = self.deps.settings
        opts = {"AWS_REGION": s.region}
        creds = boto3.session.Session(region_name=s.region).get_credentials()
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            opts |= {"AWS_ACCESS_KEY_ID": frozen.access_key, "AWS_SECRET_ACCESS_KEY": frozen.secret_key}
            if frozen.token:
                opts["AWS_SESSION_TOKEN"] = frozen.token
        elif s.aws_endpoint_url:
            # the emulator's documented dummy key (as cartflow.core.aws does), never sent to AWS
            opts |= {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
        if s.aws_endpoint_url:
            opts |= {"AWS_ENDPOINT_URL": s.aws_endpoint_url, "AWS_ALLOW_HTTP": "true"}
        return opts

    def table(self, name: str) -> tuple[int, list[dict[str, Any]]] | None:
        """(version, rows) of s3://<bucket>/<name>, or None when the table does not exist yet."""
        from deltalake import DeltaTable, QueryBuilder
        from deltalake.exceptions import TableNotFoundError

        uri = f"s3://{self.deps.settings.bucket}/{name}"
        try:
            dt = DeltaTable(uri, storage_options=self.storage_options())
        except TableNotFoundError:
            return None
        version = int(dt.version())
        cached = self._cache.get(name)
        if cached is not None and cached[0] == version:
            return cached
        reader = QueryBuilder().register("t", dt).execute("SELECT * FROM t")
        rows: list[dict[str, Any]] = []
        for batch in reader:
            columns = {n: batch.column(n).to_pylist() for n in batch.schema.names}
            rows.extend(dict(zip(columns, vals, strict=True)) for vals in zip(*columns.values(), strict=True))
        self._cache[name] = (version, rows)
        return version, rows


def delta_view(
    reader: DeltaReader | None, unavailable: str, dynamo_orders: Sequence[OrderRow], dynamo_categories: Sequence[CategoryRow]
) -> tuple[DeltaView, dict[str, dict[str, int]]]:
    """The Delta panel (tables, versions, agreement with DynamoDB) and the quarantine reasons per file."""
    if reader is None:
        return DeltaView(available=False, note=unavailable), {}
    infos = []
    kpi: dict[str, list[dict[str, Any]]] = {}
    for t in DELTA_KPI_TABLES:
        got = reader.table(f"{KPIS_PREFIX}{t}")
        infos.append(DeltaTableInfo(f"{KPIS_PREFIX}{t}", got[0] if got else None, len(got[1]) if got else 0))
        kpi[t] = got[1] if got else []
    reasons: dict[str, dict[str, int]] = {}
    for d in DataType:
        got = reader.table(f"{QUARANTINE_PREFIX}{d.value}")
        if got is not None:
            infos.append(DeltaTableInfo(f"{QUARANTINE_PREFIX}{d.value}", got[0], len(got[1])))
            reasons |= quarantine_reasons(got[1])
    mismatches = compare_kpis(
        dynamo_orders, dynamo_categories, order_rows(kpi["order_kpis"]), category_rows(kpi["category_kpis"])
    )
    view = DeltaView(
        available=True,
        note="kpis/ Delta tables compared with the DynamoDB KPI tables, key by key",
        tables=tuple(infos),
        agrees_with_dynamodb=not mismatches,
        mismatches=tuple(mismatches[:50]),
    )
    return view, reasons


# ----------------------------------------------------------------------------- the builder


class DashboardData:
    """Builds the view model from Deps; keeps what never changes again (settled batches'
    validation results) so a poll reads only the tables and new results."""

    def __init__(self, deps: Deps, *, use_delta: bool = True, clock: Callable[[], float] | None = None) -> None:
        self.deps = deps
        self.clock = clock or deps.now
        self._results: dict[tuple[str, int, str], ValidationResult | None] = {}
        self._lock = threading.Lock()
        self.delta: DeltaReader | None = None
        self.delta_note = "Delta tables not read (disabled)"
        if use_delta:
            try:
                self.delta = DeltaReader(deps)
            except ImportError:
                self.delta_note = (
                    "the deltalake package is not installed (pip install 'cartflow[dashboard]'): Delta tables not shown"
                )

    def _result(self, chunk: Chunk) -> ValidationResult | None:
        if chunk.status not in TERMINAL_BATCH:
            return None  # still changing: read again once it settles
        key = (chunk.batch_id, chunk.attempt, chunk.status)
        if key not in self._results:
            self._results[key] = views.validation_result(self.deps, chunk.batch_id)
        return self._results[key]

    def build(self) -> Dashboard:
        with self._lock:  # one build at a time: concurrent polls would repeat the same scans
            now = self.clock()
            try:
                items = [i for i in views.scan(self.deps, self.deps.settings.batch_chunks_table) if not is_lock(i)]
                chunks = [Chunk.from_dict(i) for i in items]
                batch_rows = tuple(
                    sorted(
                        (batch_row(i, now, self._result(c)) for i, c in zip(items, chunks, strict=True)),
                        key=lambda b: (b.created_at, b.batch_id),
                    )
                )
                orders = order_rows(views.order_kpis(self.deps))
                cats = category_rows(views.category_kpis(self.deps))
                states = views.files(self.deps, chunks)
            except Exception as exc:  # the page stays up and says why; the next poll tries again
                return Dashboard(
                    now, self.deps.settings.bucket, (), (), (), (), DeltaView(False, "not read"), error=_one_line(exc)
                )
            try:
                delta, reasons = delta_view(self.delta, self.delta_note, orders, cats)
            except Exception as exc:
                delta, reasons = DeltaView(available=False, note=f"Delta tables could not be read: {_one_line(exc)}"), {}
            return Dashboard(
                generated_at=now,
                bucket=self.deps.settings.bucket,
                order_kpis=orders,
                category_kpis=cats,
                batches=batch_rows,
                files=file_rows(states, reasons),
                delta=delta,
            )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:300]
