"""KPI definitions of docs/kpis.md as pure DataFrame functions (no I/O, no actions).

Inputs are the *validated* Delta tables (all batches, every version of every row);
``latest`` applies "latest batch wins" per dataset key before lines are built.

Money is exact: amounts are cast to DECIMAL before summing and divisions run at a scale
wide enough that rounding half-up to 2 (money) / 4 (rates) decimals is not a double
rounding of an already rounded value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

BATCH_ID = "batch_id"  # lineage column of every validated table (see validation/columns.py)

# A line amount: up to 1e9 (quantity 1e4 x price 1e5) with 10 decimals of the source double.
LINE_MONEY = T.DecimalType(38, 10)
# Sums narrowed to 18 integer digits so Spark keeps >= 20 decimals when dividing by a count.
SUM_MONEY = T.DecimalType(28, 10)
COUNT = T.DecimalType(10, 0)
RATE_NUMERATOR = T.DecimalType(20, 10)
MONEY = T.DecimalType(38, 2)
RATE = T.DecimalType(10, 4)

ORDER_KPIS_SCHEMA = T.StructType(
    [
        T.StructField("order_date", T.DateType()),
        T.StructField("total_orders", T.LongType()),
        T.StructField("total_revenue", MONEY),
        T.StructField("total_items_sold", T.LongType()),
        T.StructField("return_rate", RATE),
        T.StructField("unique_customers", T.LongType()),
    ]
)
CATEGORY_KPIS_SCHEMA = T.StructType(
    [
        T.StructField("category", T.StringType()),
        T.StructField("order_date", T.DateType()),
        T.StructField("daily_revenue", MONEY),
        T.StructField("avg_order_value", MONEY),
        T.StructField("avg_return_rate", RATE),
    ]
)

KEYS = {
    "orders": ("order_id",),
    "order_items": ("id",),
    "products": ("id",),
    "order_lines": ("order_id", "product_id"),
}


@dataclass(frozen=True)
class Validated:
    """The validated tables (every batch's rows); None when a table does not exist yet."""

    orders: DataFrame | None
    order_items: DataFrame | None
    products: DataFrame | None
    order_lines: DataFrame | None

    @property
    def has_three_tables(self) -> bool:
        return self.orders is not None and self.order_items is not None and self.products is not None


def latest(frame: DataFrame, key: Sequence[str]) -> DataFrame:
    """Keep, per key, the row of the greatest batch_id (batch ids start with their creation time)."""
    newest_first = Window.partitionBy(*key).orderBy(F.col(BATCH_ID).desc())
    return frame.withColumn("_version", F.row_number().over(newest_first)).where("_version = 1").drop("_version")


def _money(amount: Column) -> Column:
    # double -> DECIMAL rounds to the nearest 10-decimal value, which is exactly the CSV text
    # for any price with <= 10 decimals; summing decimals is then exact.
    return amount.cast(LINE_MONEY)


def three_table_lines(orders: DataFrame, items: DataFrame, products: DataFrame) -> DataFrame:
    o = latest(orders, KEYS["orders"]).alias("o")
    i = latest(items, KEYS["order_items"]).alias("i")
    p = latest(products, KEYS["products"]).alias("p")
    joined = i.join(o, F.col("i.order_id") == F.col("o.order_id")).join(p, F.col("i.product_id") == F.col("p.id"))
    # Cancelled items, and every item of a cancelled order, are not sales.
    sold = joined.where((F.col("i.status") != "Cancelled") & (F.col("o.status") != "Cancelled"))
    return sold.select(
        F.concat(F.lit("t:"), F.col("i.order_id").cast("string")).alias("order_key"),
        F.concat(F.lit("t:"), F.col("o.user_id").cast("string")).alias("customer_key"),
        F.to_date(F.col("o.created_at")).alias("order_date"),  # session time zone is UTC
        F.col("p.category").alias("category"),
        F.lit(1).cast("long").alias("quantity"),
        _money(F.col("i.sale_price")).alias("line_revenue"),
        ((F.col("i.status") == "Returned") | F.col("i.returned_at").isNotNull() | (F.col("o.status") == "Returned")).alias(
            "returned"
        ),
    )


NEWEST = "_newest"  # this row is its key's latest version
KEY_IN_BATCH = "_key_in_batch"  # some version of this row's key comes from the batch


def flat_versions(order_lines: DataFrame, batch_id: str) -> DataFrame:
    """Every flat row with NEWEST and KEY_IN_BATCH, from ONE shuffle by key.

    Both "latest batch wins" and "dates the batch touches" (the dates of every version of
    a key the batch sends, old versions included) need the rows grouped by key: one
    window pass gives both, instead of a window for one and a semi-join for the other.
    """
    key = [F.col(k) for k in KEYS["order_lines"]]
    newest_first = Window.partitionBy(*key).orderBy(F.col(BATCH_ID).desc())
    whole_key = Window.partitionBy(*key)
    return order_lines.select(
        "*",
        (F.row_number().over(newest_first) == 1).alias(NEWEST),
        F.max((F.col(BATCH_ID) == batch_id).cast("int")).over(whole_key).cast("boolean").alias(KEY_IN_BATCH),
    )


def flat_lines(order_lines: DataFrame, versions: bool = False) -> DataFrame:
    """The flat shape as order lines; ``versions``: the input is flat_versions(...) output."""
    lines = order_lines.where(F.col(NEWEST)) if versions else latest(order_lines, KEYS["order_lines"])
    return lines.select(
        F.concat(F.lit("f:"), F.col("order_id")).alias("order_key"),
        F.concat(F.lit("f:"), F.col("customer_id")).alias("customer_key"),
        F.col("order_date"),
        F.col("category"),
        F.col("quantity").cast("long").alias("quantity"),
        (F.col("quantity").cast(COUNT) * _money(F.col("unit_price"))).cast(LINE_MONEY).alias("line_revenue"),
        F.col("returned"),
    )


def order_lines(validated: Validated, flat: DataFrame | None = None) -> DataFrame | None:
    """Both shapes mapped onto the order-lines relation; None when no validated data exists.

    ``flat``: flat_versions(...) of the order_lines table, when the caller has it.
    """
    parts = []
    if validated.has_three_tables:
        assert validated.orders is not None and validated.order_items is not None and validated.products is not None
        parts.append(three_table_lines(validated.orders, validated.order_items, validated.products))
    if flat is not None:
        parts.append(flat_lines(flat, versions=True))
    elif validated.order_lines is not None:
        parts.append(flat_lines(validated.order_lines))
    if not parts:
        return None
    lines = parts[0]
    for part in parts[1:]:
        lines = lines.unionByName(part)
    return lines


def touched_order_dates(validated: Validated, batch_id: str, flat: DataFrame | None = None) -> DataFrame | None:
    """Distinct ``order_date`` of every line a row of ``batch_id`` contributes to, old versions included.

    Superseded versions matter: an order whose created_at moved, or an item moved to another
    order, changes the KPIs of the *old* date as well. A product row touches every date on
    which one of its items was ordered (its category feeds CategoryKPIs).
    ``flat``: flat_versions(...) of the order_lines table, when the caller has it.
    """
    parts: list[DataFrame] = []
    if validated.orders is not None:
        affected_orders = validated.orders.where(F.col(BATCH_ID) == batch_id).select("order_id")
        if validated.order_items is not None:
            items = validated.order_items
            batch_item_ids = items.where(F.col(BATCH_ID) == batch_id).select("id").distinct()
            affected_orders = affected_orders.unionByName(items.join(batch_item_ids, "id", "left_semi").select("order_id"))
            if validated.products is not None:
                batch_product_ids = validated.products.where(F.col(BATCH_ID) == batch_id).select(F.col("id").alias("product_id"))
                affected_orders = affected_orders.unionByName(
                    items.join(batch_product_ids.distinct(), "product_id", "left_semi").select("order_id")
                )
        parts.append(
            validated.orders.join(affected_orders.distinct(), "order_id", "left_semi").select(
                F.to_date("created_at").alias("order_date")
            )
        )
    if flat is not None:
        parts.append(flat.where(F.col(KEY_IN_BATCH)).select("order_date"))
    elif validated.order_lines is not None:
        table = validated.order_lines
        key = list(KEYS["order_lines"])
        batch_keys = table.where(F.col(BATCH_ID) == batch_id).select(*key).distinct()
        parts.append(table.join(batch_keys, key, "left_semi").select("order_date"))
    if not parts:
        return None
    dates = parts[0]
    for part in parts[1:]:
        dates = dates.unionByName(part)
    return dates.distinct()


def _exact_ratio(numerator: Column, denominator: Column, numerator_type: T.DecimalType) -> Column:
    return numerator.cast(numerator_type) / denominator.cast(COUNT)


def _half_up(value: Column, scale: int, result: T.DecimalType) -> Column:
    return F.round(value, scale).cast(result)  # Spark rounds DECIMAL half-up


def _returned_orders() -> Column:
    return F.count_distinct(F.when(F.col("returned"), F.col("order_key")))


def order_kpis(lines: DataFrame) -> DataFrame:
    per_date = lines.groupBy("order_date").agg(
        F.count_distinct("order_key").alias("total_orders"),
        F.sum("line_revenue").alias("_revenue"),
        F.sum("quantity").alias("total_items_sold"),
        _returned_orders().alias("_returned_orders"),
        F.count_distinct("customer_key").alias("unique_customers"),
    )
    return per_date.select(
        "order_date",
        "total_orders",
        _half_up(F.col("_revenue"), 2, MONEY).alias("total_revenue"),
        F.col("total_items_sold").cast("long").alias("total_items_sold"),
        _half_up(_exact_ratio(F.col("_returned_orders"), F.col("total_orders"), RATE_NUMERATOR), 4, RATE).alias("return_rate"),
        "unique_customers",
    )


def category_kpis(lines: DataFrame) -> DataFrame:
    per_category = lines.groupBy("category", "order_date").agg(
        F.sum("line_revenue").alias("_revenue"),
        F.count_distinct("order_key").alias("_orders"),
        _returned_orders().alias("_returned_orders"),
    )
    return per_category.select(
        "category",
        "order_date",
        _half_up(F.col("_revenue"), 2, MONEY).alias("daily_revenue"),
        # Per order, not per line (seed 002 averaged per line).
        _half_up(_exact_ratio(F.col("_revenue"), F.col("_orders"), SUM_MONEY), 2, MONEY).alias("avg_order_value"),
        _half_up(_exact_ratio(F.col("_returned_orders"), F.col("_orders"), RATE_NUMERATOR), 4, RATE).alias("avg_return_rate"),
    )
