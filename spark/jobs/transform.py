"""The TRANSFORMATION job: recompute the KPIs of every order date this batch touches.

Only touched dates are recomputed (from ALL validated data, latest batch wins), so a replay
writes identical values, a late batch corrects its old date and other dates are never
rewritten. KPI rows are few (one per date / category and date): they are collected to the
driver once and written to the sink (DynamoDB) and to Delta copies from that one result.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import partial
from typing import Any, Protocol

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cartflow.core.aws import AwsClients
from cartflow.core.config import Settings
from cartflow.core.models import KPIS_PREFIX, VALIDATED_PREFIX, VALIDATION_OUTPUT_PREFIX, BatchInput, TransformResult
from spark.jobs import kpis
from spark.jobs.delta_io import dataset_uri, default_warehouse, read_delta_if_exists, require_utc
from spark.jobs.frames import local_frame
from spark.jobs.session import SHUFFLE_PARQUET_BYTES, estimated_bytes, fit_shuffle_partitions, to_spark_uri
from spark.jobs.storage import Storage, join_uri
from spark.jobs.together import run_together

log = logging.getLogger(__name__)

UPDATED_BY_BATCH = "updated_by_batch"
CATEGORY_BY_DATE_INDEX = "by_order_date"  # GSI (HASH order_date, RANGE category) of CategoryKPIs


@dataclass(frozen=True)
class KpiRows:
    """The recomputed KPIs of the touched dates, as DynamoDB-ready Python values."""

    touched_dates: tuple[str, ...]  # ISO dates, sorted
    order_rows: tuple[dict[str, Any], ...]
    category_rows: tuple[dict[str, Any], ...]


class KpiSink(Protocol):
    """Where KPI rows are served from. Must make every touched date equal to ``rows``."""

    def write(self, rows: KpiRows, batch_id: str) -> None: ...


class DynamoKpiSink:
    """Full-item puts of every recomputed row; deletes rows of touched dates that vanished.

    Writes go in parallel: the items are cut into BatchWriteItem-sized chunks (25) and a
    small thread pool sends them, each thread with its own boto3 session and resource
    (boto3 sessions and resources are not thread-safe). All puts finish before any delete
    starts, so a reader never misses a row that should exist.
    """

    CHUNK = 25  # BatchWriteItem's limit
    WORKERS = 4  # I/O bound: threads wait on HTTP, not on the 2 cores

    def __init__(self, settings: Settings, clients: AwsClients | None = None, workers: int | None = None) -> None:
        self._settings = settings
        self._clients = clients or AwsClients(settings)
        self._workers = max(1, workers or self.WORKERS)
        self._local = threading.local()
        self._owner: threading.Thread | None = None  # the thread calling write(): uses self._clients

    def _thread_clients(self) -> AwsClients:
        """The caller's clients on the calling thread, a private set on every pool thread."""
        if threading.current_thread() is self._owner:
            return self._clients
        clients = getattr(self._local, "clients", None)
        if clients is None:
            clients = self._local.clients = AwsClients(self._clients.settings)
        return clients

    def write(self, rows: KpiRows, batch_id: str) -> None:
        self._owner = threading.current_thread()
        order_table, category_table = self._settings.order_kpis_table, self._settings.category_kpis_table
        puts = [(order_table, "put", {**item, UPDATED_BY_BATCH: batch_id}) for item in rows.order_rows]
        puts += [(category_table, "put", {**item, UPDATED_BY_BATCH: batch_id}) for item in rows.category_rows]
        self._run_chunks(puts)

        dates_with_orders = {item["order_date"] for item in rows.order_rows}
        kept_categories = {(item["category"], item["order_date"]) for item in rows.category_rows}
        deletes = [
            (order_table, "delete", {"order_date": day})
            for day in rows.touched_dates
            if day not in dates_with_orders  # every line of that date is gone (e.g. cancelled)
        ]
        # _map returns one result per item, in order.
        for day, categories in zip(rows.touched_dates, self._map(self._categories_on, list(rows.touched_dates)), strict=True):
            deletes += [
                (category_table, "delete", {"category": category, "order_date": day})
                for category in categories
                if (category, day) not in kept_categories
            ]
        self._run_chunks(deletes)

    def _run_chunks(self, requests: list[tuple[str, str, dict[str, Any]]]) -> None:
        chunks = [requests[i : i + self.CHUNK] for i in range(0, len(requests), self.CHUNK)]
        self._map(self._write_chunk, chunks)

    def _write_chunk(self, chunk: list[tuple[str, str, dict[str, Any]]]) -> None:
        resource = self._thread_clients().ddb_resource
        by_table: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for table, op, payload in chunk:
            by_table.setdefault(table, []).append((op, payload))
        for table, ops in by_table.items():
            with resource.Table(table).batch_writer() as writer:  # retries unprocessed items
                for op, payload in ops:
                    if op == "put":
                        writer.put_item(Item=payload)
                    else:
                        writer.delete_item(Key=payload)

    def _map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """``fn`` over ``items`` on the pool (in order); inline when there is one item or one worker."""
        if len(items) <= 1 or self._workers == 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self._workers, len(items)), thread_name_prefix="kpi-sink") as pool:
            return list(pool.map(fn, items))

    def _categories_on(self, day: str) -> list[str]:
        client = self._thread_clients().dynamodb
        paginator = client.get_paginator("query")
        pages = paginator.paginate(
            TableName=self._settings.category_kpis_table,
            IndexName=CATEGORY_BY_DATE_INDEX,
            KeyConditionExpression="order_date = :d",
            ExpressionAttributeValues={":d": {"S": day}},
            ProjectionExpression="category",
        )
        return [item["category"]["S"] for page in pages for item in page.get("Items", [])]


# ----------------------------------------------------------------------------- reading


def load_validated(spark: SparkSession, warehouse: str) -> kpis.Validated:
    def table(dataset: str) -> DataFrame | None:
        return read_delta_if_exists(spark, dataset_uri(warehouse, VALIDATED_PREFIX, dataset))

    return kpis.Validated(
        orders=table("orders"),
        order_items=table("order_items"),
        products=table("products"),
        order_lines=table("order_lines"),
    )


# Columns of validated/order_lines the KPIs read: the cached versions stay narrow.
_FLAT_COLUMNS = ("order_id", "product_id", "customer_id", "order_date", "category", "quantity", "unit_price", "returned")


def compute_kpi_rows(spark: SparkSession, validated: kpis.Validated, batch_id: str) -> KpiRows:
    """Two Spark actions: the touched dates, then both KPI sets of those dates together.

    Flat rows are grouped by key ONCE (kpis.flat_versions, cached): the touched dates and
    latest-wins both come from that shuffle. Three-table lines (joins, latest-wins
    windows) are cached between the two KPI sets as before.
    """
    flat = None
    if validated.order_lines is not None:
        flat = kpis.flat_versions(validated.order_lines.select(*_FLAT_COLUMNS, kpis.BATCH_ID), batch_id).cache()
    lines = None
    try:
        dates_frame = kpis.touched_order_dates(validated, batch_id, flat)
        touched = sorted(r["order_date"] for r in dates_frame.collect()) if dates_frame is not None else []
        touched = [d for d in touched if d is not None]
        all_lines = kpis.order_lines(validated, flat)
        if not touched or all_lines is None:
            return KpiRows(tuple(d.isoformat() for d in touched), (), ())
        lines = all_lines.where(F.col("order_date").isin(touched))
        if validated.has_three_tables:
            lines = lines.cache()  # joins + windows: not twice
        order_rows, category_rows = _collect_kpis(lines)
    finally:
        for frame in (flat, lines):
            if frame is not None and frame.is_cached:
                frame.unpersist()
    return KpiRows(
        touched_dates=tuple(d.isoformat() for d in touched),
        order_rows=tuple(sorted((_item(r) for r in order_rows), key=lambda i: i["order_date"])),
        category_rows=tuple(sorted((_item(r) for r in category_rows), key=lambda i: (i["order_date"], i["category"]))),
    )


def _collect_kpis(lines: DataFrame) -> tuple[list[Row], list[Row]]:
    """Both KPI sets in ONE action: a union of two struct columns, one of them null per row."""
    order_type = kpis.ORDER_KPIS_SCHEMA
    category_type = kpis.CATEGORY_KPIS_SCHEMA
    order_part = kpis.order_kpis(lines).select(
        F.struct(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in order_type.fields]).alias("o"),
        F.lit(None).cast(category_type).alias("c"),
    )
    category_part = kpis.category_kpis(lines).select(
        F.lit(None).cast(order_type).alias("o"),
        F.struct(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in category_type.fields]).alias("c"),
    )
    rows = order_part.unionByName(category_part).collect()
    return [r["o"] for r in rows if r["o"] is not None], [r["c"] for r in rows if r["c"] is not None]


def _item(row: Row) -> dict[str, Any]:
    """Spark row -> DynamoDB item values: ISO date strings, Decimal numbers (never floats)."""
    item: dict[str, Any] = {}
    for name, value in row.asDict().items():
        if isinstance(value, date):
            item[name] = value.isoformat()
        elif isinstance(value, bool) or value is None:
            item[name] = value
        elif isinstance(value, int):
            item[name] = Decimal(value)
        else:
            item[name] = value
    return item


# ----------------------------------------------------------------------------- Delta copies


def write_kpi_copies(spark: SparkSession, warehouse: str, rows: KpiRows, batch_id: str) -> None:
    """Replace the touched dates' partitions of kpis/order_kpis and kpis/category_kpis."""
    if not rows.touched_dates:
        return
    dates = ", ".join(f"DATE'{d}'" for d in rows.touched_dates)
    writers = []
    for name, schema, items in (
        ("order_kpis", kpis.ORDER_KPIS_SCHEMA, rows.order_rows),
        ("category_kpis", kpis.CATEGORY_KPIS_SCHEMA, rows.category_rows),
    ):
        full_schema = T.StructType([*schema.fields, T.StructField(UPDATED_BY_BATCH, T.StringType())])
        data = [_delta_row(item, full_schema, batch_id) for item in items]
        writer = (
            local_frame(spark, data, full_schema)
            .write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", f"order_date IN ({dates})")
            .partitionBy("order_date")
        )
        writers.append(partial(writer.save, to_spark_uri(join_uri(warehouse, KPIS_PREFIX, name))))
    run_together(spark, writers)  # two small tables: their commits overlap


def _delta_row(item: dict[str, Any], schema: T.StructType, batch_id: str) -> tuple[Any, ...]:
    values = {**item, UPDATED_BY_BATCH: batch_id}
    out = []
    for f in schema.fields:
        value = values[f.name]
        if isinstance(f.dataType, T.DateType):
            value = date.fromisoformat(value)
        elif isinstance(f.dataType, T.LongType):
            value = int(value)
        out.append(value)
    return tuple(out)


# ----------------------------------------------------------------------------- the job


def run_transform(
    spark: SparkSession,
    settings: Settings,
    batch: BatchInput,
    warehouse: str | None = None,
    sink: KpiSink | None = None,
    *,
    storage: Storage | None = None,
) -> TransformResult:
    warehouse = warehouse or default_warehouse(batch)
    sink = sink or DynamoKpiSink(settings)
    storage = storage or Storage(settings)
    require_utc(spark)

    validated = load_validated(spark, warehouse)
    tables = (validated.orders, validated.order_items, validated.products, validated.order_lines)
    fit_shuffle_partitions(spark, settings, sum(estimated_bytes(t) for t in tables if t is not None), SHUFFLE_PARQUET_BYTES)
    rows = compute_kpi_rows(spark, validated, batch.batch_id)
    # The DynamoDB writes (network I/O) overlap the Delta copies (Spark jobs); both are
    # idempotent per touched date, so a retry after a failure of either redoes both.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kpi-sink") as pool:
        sink_written = pool.submit(sink.write, rows, batch.batch_id)
        write_kpi_copies(spark, warehouse, rows, batch.batch_id)
        sink_written.result()

    result = TransformResult(
        batch_id=batch.batch_id,
        order_dates=list(rows.touched_dates),
        category_kpi_rows=len(rows.category_rows),
        order_kpi_rows=len(rows.order_rows),
    )
    # The AWS rendering of the state machine reads this document (runTask.sync has no output).
    storage.write_text(
        join_uri(warehouse, VALIDATION_OUTPUT_PREFIX, f"{batch.batch_id}.transform.json"),
        result.model_dump_json(indent=2),
    )
    log.info(
        "transform of %s: %d dates, %d order rows, %d category rows",
        batch.batch_id,
        len(rows.touched_dates),
        len(rows.order_rows),
        len(rows.category_rows),
    )
    return result
