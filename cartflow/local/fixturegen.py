"""Seeded generator of raw CSV batches (TheLook-like three tables, or seed 002's flat order lines).

``generate(...)`` writes files laid out like ``raw/<data_type>/``::

    out_dir/orders/orders_part1.csv ...        (shape "tables")
    out_dir/order_items/order_items_part1.csv ...
    out_dir/products/products_part1.csv
    out_dir/order_lines/order_lines_part1.csv ...  (shape "order_lines")

Values satisfy the dataset contracts when ``invalid_fraction == 0``: allowed values and ranges
are read from the contract YAMLs (the spec) so the generator cannot drift from them. With
``invalid_fraction > 0`` a reproducible share of rows breaks exactly one rule each (required,
type, range, allowed, pattern, duplicate key, dangling reference, malformed row); rows that
reference a broken row are rejected too (cascade). Same arguments -> byte-identical files.

Stdlib only (plus PyYAML, already a cartflow dependency, to read the contracts). Rows are
streamed to disk, so millions of rows need no memory.
"""

from __future__ import annotations

import csv
import io
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import IO, Any, Literal, get_args

import yaml

Shape = Literal["tables", "order_lines"]

# Realistic distributions; statuses missing from a contract's allowed list are simply not used.
_ORDER_STATUS_WEIGHTS = {"Complete": 40, "Shipped": 20, "Processing": 15, "Cancelled": 10, "Returned": 15}
_THELOOK_CATEGORIES = (
    "Jeans", "Tops & Tees", "Outerwear & Coats", "Accessories", "Swim", "Sweaters",
    "Active", "Shorts", "Intimates", "Socks", "Sleep & Lounge", "Dresses",
)  # fmt: skip
_BRANDS = ("Levi's", "Hanes", "Columbia", "Fossil", "Wrangler", "Gap", "Carhartt", "Roxy", "Nike", "Calvin Klein")
_ADJECTIVES = ("Classic", "Slim Fit", "Relaxed", "Vintage", "Essential", "Premium", "Everyday", "Organic")
_QTY_WEIGHTS = (1, 1, 1, 1, 1, 1, 2, 2, 3, 4)  # flat shape: mostly single units
_LINES_PER_ORDER = (1, 1, 1, 2, 2, 3, 4)
_BATCH_LINES = 4096  # rows buffered per write() call


# --- contracts -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Col:
    name: str
    type: str
    required: bool
    min: Any
    max: Any
    allowed: tuple[str, ...] | None


def _contracts_dir() -> Path:
    # The contracts ship as package data of spark.jobs (the repo folder in an editable install).
    from importlib.resources import files

    return Path(str(files("spark.jobs") / "contracts"))


def load_contract_columns(dataset: str) -> dict[str, _Col]:
    spec = yaml.safe_load((_contracts_dir() / f"{dataset}.yaml").read_text())
    return {
        name: _Col(
            name,
            c["type"],
            bool(c.get("required", False)),
            c.get("min"),
            c.get("max"),
            tuple(str(v) for v in c["allowed"]) if "allowed" in c else None,
        )
        for name, c in spec["columns"].items()
    }


@dataclass(frozen=True)
class _Spec:
    """The contract facts the generator needs, with safe value windows inside the ranges."""

    orders: dict[str, _Col]
    items: dict[str, _Col]
    products: dict[str, _Col]
    lines: dict[str, _Col]

    @classmethod
    def load(cls) -> _Spec:
        return cls(*(load_contract_columns(d) for d in ("orders", "order_items", "products", "order_lines")))


def _cents_window(col: _Col, lo: float, hi: float) -> tuple[int, int]:
    """[lo, hi] in cents, clipped to the column's contract range."""
    if col.min is not None:
        lo = max(lo, float(col.min))
    if col.max is not None:
        hi = min(hi, float(col.max))
    lo_c, hi_c = round(lo * 100 + 0.4999), int(hi * 100)
    if lo_c > hi_c:
        raise ValueError(f"{col.name}: contract range leaves no room for generated prices")
    return lo_c, hi_c


def _int_window(col: _Col, lo: int, hi: int) -> tuple[int, int]:
    lo = max(lo, int(col.min)) if col.min is not None else lo
    hi = min(hi, int(col.max)) if col.max is not None else hi
    return lo, hi


def _allowed(col: _Col, preferred: tuple[str, ...]) -> tuple[str, ...]:
    return col.allowed if col.allowed is not None else preferred


# --- formatting -------------------------------------------------------------------------------
def _money(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


class _Clock:
    """Fast 'YYYY-MM-DD HH:MM:SS' formatting from (day offset, second of day): no datetime per row."""

    def __init__(self, start: date, span_days: int) -> None:
        self._days = [(start + timedelta(days=d)).isoformat() for d in range(span_days)]

    def day(self, offset: int) -> str:
        return self._days[offset]

    def ts(self, offset: int, second: int) -> str:
        extra, second = divmod(second, 86_400)
        h, rem = divmod(second, 3600)
        m, s = divmod(rem, 60)
        return f"{self._days[offset + extra]} {h:02d}:{m:02d}:{s:02d}"


class _PartWriter:
    """Writes rows into name_part1..N.csv, moving to the next part once its share is reached."""

    def __init__(self, folder: Path, name: str, header: list[str], total: int, parts: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.paths = [folder / f"{name}_part{k + 1}.csv" for k in range(parts)]
        self._header = ",".join(header) + "\n"
        self._targets = [total * (k + 1) // parts for k in range(parts)]
        self._part = 0
        self._written = 0
        self._buf: list[str] = []
        self._fh: IO[str] = self._open(0)

    def _open(self, k: int) -> IO[str]:
        fh = self.paths[k].open("w", newline="", encoding="utf-8")
        fh.write(self._header)
        return fh

    def boundary(self, progress: int) -> None:
        """Call between orders: switch file when ``progress`` (rows of the driving table) passed the share."""
        while self._part < len(self.paths) - 1 and progress >= self._targets[self._part]:
            self._flush()
            self._fh.close()
            self._part += 1
            self._fh = self._open(self._part)

    def write(self, fields: list[str]) -> None:
        self._buf.append(",".join(fields) + "\n")
        self._written += 1
        if len(self._buf) >= _BATCH_LINES:
            self._flush()

    def _flush(self) -> None:
        self._fh.write("".join(self._buf))
        self._buf.clear()

    def close(self) -> list[Path]:
        self._flush()
        self._fh.close()
        for k in range(self._part + 1, len(self.paths)):  # parts never reached: header only
            self._open(k).close()
        return self.paths


# --- invalid rows -------------------------------------------------------------------------------
class _Breaker:
    """Breaks a row (list of CSV fields, contract column order) with one rule kind, reproducibly.

    Uses its own RNG stream so the *valid* content of a run does not depend on invalid_fraction.
    """

    def __init__(self, seed: int, fraction: float, cols: dict[str, _Col], kinds: tuple[str, ...]) -> None:
        self._rng = random.Random(seed * 7919 + 17)
        self._fraction = fraction
        self._cols = list(cols.values())
        self._index = {c.name: i for i, c in enumerate(self._cols)}
        self._kinds = kinds
        self.active = fraction > 0
        self.broken = 0

    def maybe_break(self, row: list[str], previous_key: dict[str, str] | None) -> list[str]:
        if self._fraction <= 0 or self._rng.random() >= self._fraction:
            return row
        kind = self._rng.choice(self._kinds)
        if kind == "duplicate" and previous_key is None:
            kind = "required"
        self.broken += 1
        return self._apply(kind, list(row), previous_key or {})

    def _pick(self, pred: Any) -> _Col:
        return self._rng.choice([c for c in self._cols if pred(c)])

    def _apply(self, kind: str, row: list[str], previous_key: dict[str, str]) -> list[str]:
        idx = self._index
        match kind:
            case "required":
                row[idx[self._pick(lambda c: c.required).name]] = ""
            case "type":
                col = self._pick(lambda c: c.type != "string")
                row[idx[col.name]] = {"date": "2025-13-01", "timestamp": "2025-07-32 10:00:00",
                                      "boolean": "maybe"}.get(col.type, "abc")  # fmt: skip
            case "below_min":
                col = self._pick(lambda c: c.min is not None and c.required)
                row[idx[col.name]] = _below(col)
            case "above_max":
                col = self._pick(lambda c: c.max is not None and c.required)
                row[idx[col.name]] = _above(col)
            case "not_allowed":
                col = self._pick(lambda c: c.allowed is not None and c.required)
                row[idx[col.name]] = "Lost"
            case "pattern":
                row[idx[self._pick(lambda c: c.type == "string" and c.name.endswith("_id")).name]] = "bad id!"
            case "duplicate":
                for name, value in previous_key.items():
                    row[idx[name]] = value
            case "dangling_order":
                row[idx["order_id"]] = str(10**12 + self._rng.randrange(10**6))
            case "dangling_product":
                row[idx["product_id"]] = str(10**11 + self._rng.randrange(10**6))
            case "malformed":
                row = row[:-2]
        return row


def _below(col: _Col) -> str:
    return "-1.00" if col.type == "double" else str(int(col.min) - 1)


def _above(col: _Col) -> str:
    return _money(round(float(col.max) * 100) + 100) if col.type == "double" else str(int(col.max) + 1)


# --- shapes ----------------------------------------------------------------------------------------
def _order_sizes(rng: random.Random, rows: int) -> Iterator[int]:
    """Lines per order until ``rows`` lines are reached (the last order is cut to fit)."""
    left = rows
    while left > 0:
        n = min(left, rng.choice(_LINES_PER_ORDER))
        left -= n
        yield n


def _generate_order_lines(spec: _Spec, rows: int, out: Path, rng: random.Random, start: date, days: int,
                          files: int, breaker: _Breaker) -> dict[str, list[Path]]:  # fmt: skip
    cols = spec.lines
    categories = _allowed(cols["category"], ("Electronics", "Books"))
    q_lo, q_hi = _int_window(cols["quantity"], 1, 10)
    p_lo, p_hi = _cents_window(cols["unit_price"], 1.99, 499.99)
    n_products = max(20, min(20_000, rows // 20))
    n_customers = max(5, rows // 4)
    # A product has one category and one price, as in a real catalogue.
    product_cat = [rng.choice(categories) for _ in range(n_products)]
    product_price = [_money(rng.randint(p_lo, p_hi)) for _ in range(n_products)]
    product_ids = [f"PROD{p + 1:06d}" for p in range(n_products)]
    qty_choices = [str(q) for q in _QTY_WEIGHTS if q_lo <= q <= q_hi] or [str(q_lo)]
    clock = _Clock(start, days)
    writer = _PartWriter(out / "order_lines", "order_lines", list(cols), rows, files)
    done = 0
    previous: dict[str, str] | None = None
    # Hot loop (millions of rows): bound methods in locals, no per-row allocations we can avoid.
    rand, randrange, choice, write = rng.random, rng.randrange, rng.choice, writer.write
    invalid, breaking = breaker.maybe_break, breaker.active
    for order_no, size in enumerate(_order_sizes(rng, rows), start=1):
        writer.boundary(done)
        order_id = f"ORD{order_no:08d}"
        customer = f"CUST{randrange(1, n_customers + 1):07d}"
        day = clock.day(randrange(days))
        returned_order = rand() < 0.12
        seen: set[int] = set()
        for _ in range(size):
            p = randrange(n_products)
            while p in seen:  # (order_id, product_id) is the key: no repeated product in an order
                p = randrange(n_products)
            seen.add(p)
            returned = "true" if returned_order and (size == 1 or rand() < 0.6) else "false"
            row = [order_id, customer, day, product_cat[p], product_ids[p], choice(qty_choices),
                   product_price[p], returned]  # fmt: skip
            if breaking:
                row = invalid(row, previous)
                previous = {"order_id": order_id, "product_id": product_ids[p]}
            write(row)
        done += size
    return {"order_lines": writer.close()}


def _write_products(spec: _Spec, out: Path, rng: random.Random, n_products: int) -> tuple[list[Path], list[int]]:
    """Products catalogue (small: written in one go); returns paths and each product's price in cents."""
    cols = spec.products
    r_lo, r_hi = _cents_window(cols["retail_price"], 4.99, 299.99)
    departments = _allowed(cols["department"], ("Men", "Women"))
    dc_lo, dc_hi = _int_window(cols["distribution_center_id"], 1, 10)
    prices: list[int] = []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(cols))
    for pid in range(1, n_products + 1):
        cents = rng.randint(r_lo, r_hi)
        prices.append(cents)
        category = rng.choice(_THELOOK_CATEGORIES)
        name = f"{rng.choice(_ADJECTIVES)} {category.split(' ')[0]} #{pid}"
        row = {"id": str(pid), "cost": _money(int(cents * rng.uniform(0.35, 0.6))), "category": category,
               "name": name, "brand": rng.choice(_BRANDS), "retail_price": _money(cents),
               "department": rng.choice(departments), "sku": f"{rng.getrandbits(48):012X}",
               "distribution_center_id": str(rng.randint(dc_lo, dc_hi))}  # fmt: skip
        w.writerow([row.get(c, "") for c in cols])
    folder = out / "products"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "products_part1.csv"
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    return [path], prices


def _item_statuses(rng: random.Random, order_status: str, n: int, allowed: tuple[str, ...]) -> list[str]:
    """Items mostly follow the order; a Complete order may have one Returned item, a Processing
    order one Cancelled item (both happen in TheLook and exercise the item-level KPI rules)."""
    out = [order_status if order_status in allowed else allowed[0]] * n
    if n >= 2 and order_status == "Complete" and "Returned" in allowed and rng.random() < 0.15:
        out[rng.randrange(n)] = "Returned"
    if n >= 2 and order_status == "Processing" and "Cancelled" in allowed and rng.random() < 0.15:
        out[rng.randrange(n)] = "Cancelled"
    return out


def _generate_tables(spec: _Spec, rows: int, out: Path, rng: random.Random, seed: int, start: date, days: int,
                     files: int, fraction: float, item_breaker: _Breaker) -> dict[str, list[Path]]:  # fmt: skip
    n_products = max(20, min(5_000, rows // 20))
    product_paths, prices = _write_products(spec, out, rng, n_products)
    statuses = _allowed(spec.orders["status"], tuple(_ORDER_STATUS_WEIGHTS))
    weights = [_ORDER_STATUS_WEIGHTS.get(s, 10) for s in statuses]
    item_allowed = _allowed(spec.items["status"], statuses)
    genders = _allowed(spec.orders["gender"], ("M", "F"))
    n_lo, n_hi = _int_window(spec.orders["num_of_item"], 1, 1000)
    n_users = max(5, rows // 4)
    clock = _Clock(start, days + 30)  # ship/deliver/return dates run past the order window
    orders_w = _PartWriter(out / "orders", "orders", list(spec.orders), rows, files)
    items_w = _PartWriter(out / "order_items", "order_items", list(spec.items), rows, files)
    order_breaker = _Breaker(seed + 1, fraction, spec.orders,
                             ("required", "type", "below_min", "above_max", "not_allowed", "duplicate", "malformed"))  # fmt: skip
    done, item_id = 0, 0
    prev_order: dict[str, str] | None = None
    prev_item: dict[str, str] | None = None
    for order_id, drawn_size in enumerate(_order_sizes(rng, rows), start=1):
        orders_w.boundary(done)
        items_w.boundary(done)
        size = min(max(drawn_size, n_lo), n_hi)
        user = rng.randrange(1, n_users + 1)
        status = rng.choices(statuses, weights)[0]
        day, second = rng.randrange(days), rng.randrange(86_400)
        created = clock.ts(day, second)
        shipped = delivered = returned = ""
        if status in ("Shipped", "Complete", "Returned"):
            ship_after = rng.randrange(3_600, 3 * 86_400)
            shipped = clock.ts(day, second + ship_after)
            if status != "Shipped":
                deliver_after = ship_after + rng.randrange(86_400, 4 * 86_400)
                delivered = clock.ts(day, second + deliver_after)
                if status == "Returned":
                    returned = clock.ts(day, second + deliver_after + rng.randrange(86_400, 5 * 86_400))
        order = {"order_id": str(order_id), "user_id": str(user), "status": status,
                 "gender": genders[user % len(genders)], "created_at": created, "returned_at": returned,
                 "shipped_at": shipped, "delivered_at": delivered, "num_of_item": str(size)}  # fmt: skip
        orders_w.write(order_breaker.maybe_break([order.get(c, "") for c in spec.orders], prev_order))
        prev_order = {"order_id": order["order_id"]}
        for item_status in _item_statuses(rng, status, size, item_allowed):
            item_id += 1
            p = rng.randrange(n_products)
            item_returned = returned if item_status == "Returned" else ""
            if item_status == "Returned" and not item_returned:  # item-level return in a Complete order
                item_returned = clock.ts(day, second + 9 * 86_400)
            item = {"id": str(item_id), "order_id": str(order_id), "user_id": str(user), "product_id": str(p + 1),
                    "inventory_item_id": str(100_000 + item_id), "status": item_status, "created_at": created,
                    "shipped_at": "" if item_status == "Cancelled" else shipped,
                    "delivered_at": "" if item_status == "Cancelled" else delivered,
                    "returned_at": item_returned, "sale_price": _money(prices[p])}  # fmt: skip
            items_w.write(item_breaker.maybe_break([item.get(c, "") for c in spec.items], prev_item))
            prev_item = {"id": item["id"]}
        done += size
    return {"orders": orders_w.close(), "order_items": items_w.close(), "products": product_paths}


# --- entry point ------------------------------------------------------------------------------
def generate(
    shape: Shape,
    rows: int,
    out_dir: Path,
    seed: int = 7,
    days: int = 3,
    start_date: str = "2025-07-01",
    files: int = 1,
    invalid_fraction: float = 0.0,
) -> dict[str, list[Path]]:
    """Write a raw batch; ``rows`` = order lines (order_items rows for "tables").

    Returns {data_type: [paths]} in part order.
    """
    if rows < 1 or days < 1 or files < 1:
        raise ValueError("rows, days and files must be >= 1")
    if not 0.0 <= invalid_fraction <= 1.0:
        raise ValueError("invalid_fraction must be within [0, 1]")
    start = date.fromisoformat(start_date)
    out_dir = Path(out_dir)
    spec = _Spec.load()
    rng = random.Random(seed)
    if shape == "order_lines":
        breaker = _Breaker(seed, invalid_fraction, spec.lines,
                           ("required", "type", "below_min", "above_max", "not_allowed", "pattern",
                            "duplicate", "malformed"))  # fmt: skip
        return _generate_order_lines(spec, rows, out_dir, rng, start, days, files, breaker)
    if shape == "tables":
        breaker = _Breaker(seed, invalid_fraction, spec.items,
                           ("required", "type", "below_min", "above_max", "not_allowed", "duplicate",
                            "dangling_order", "dangling_product", "malformed"))  # fmt: skip
        return _generate_tables(spec, rows, out_dir, rng, seed, start, days, files, invalid_fraction, breaker)
    raise ValueError(f"unknown shape {shape!r}")


def main() -> None:  # pragma: no cover - convenience CLI: python -m cartflow.local.fixturegen SHAPE ROWS OUT
    import argparse
    import time

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("shape", choices=get_args(Shape))
    ap.add_argument("rows", type=int)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--days", type=int, default=3)
    ap.add_argument("--start-date", default="2025-07-01")
    ap.add_argument("--files", type=int, default=1)
    ap.add_argument("--invalid-fraction", type=float, default=0.0)
    a = ap.parse_args()
    t0 = time.perf_counter()
    paths = generate(a.shape, a.rows, a.out_dir, a.seed, a.days, a.start_date, a.files, a.invalid_fraction)
    print(f"{sum(len(v) for v in paths.values())} files in {time.perf_counter() - t0:.2f}s")


if __name__ == "__main__":  # pragma: no cover
    main()
