"""The bench's single-node engines (bench/engine_duckdb.py, bench/engine_polars.py) agree with each
other and with the test oracle on small generated batches, so CI exercises the bench code
without its big sizes."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("polars")

from bench import engine_polars
from bench.__main__ import compare, parse_size, size_label
from bench.engine_duckdb import Engine
from cartflow.local.fixturegen import generate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import oracle


def _duckdb(batch: dict[str, list[Path]]) -> dict:
    engine = Engine(threads=1)
    try:
        counts = engine.run(batch)
        touched, orders, categories = engine.kpis()
    finally:
        engine.close()
    return {"touched": touched, "order_kpis": orders, "category_kpis": categories, "counts": counts}


def _polars(batch: dict[str, list[Path]]) -> dict:
    counts, valid = engine_polars.run(batch)
    touched, orders, categories = engine_polars.kpis(valid)
    return {"touched": touched, "order_kpis": orders, "category_kpis": categories, "counts": counts}


def _oracle(batch: dict[str, list[Path]]) -> dict:
    orc = oracle.Oracle()
    touched = orc.add_batch(batch)
    orders, categories = orc.kpis(touched)
    rejected = Counter(r.dataset for r in orc.rejected)
    counts = {
        ds: {"valid": orc.con.execute(f"SELECT count(*) FROM ok_0_{ds}").fetchone()[0], "quarantined": rejected.get(ds, 0)}
        for ds in batch
    }
    return {"touched": sorted(touched), "order_kpis": orders, "category_kpis": categories, "counts": counts}


@pytest.mark.parametrize("shape", ["order_lines", "tables"])
def test_duckdb_polars_and_the_oracle_agree(tmp_path: Path, shape: str) -> None:
    batch = generate(shape, 3000, tmp_path, seed=11, files=2, invalid_fraction=0.05)  # type: ignore[arg-type]
    duck, pol, orc = _duckdb(batch), _polars(batch), _oracle(batch)

    assert sum(c["quarantined"] for c in duck["counts"].values()) > 0  # the rules were exercised
    assert duck["order_kpis"] and duck["category_kpis"]
    for name, other in (("polars", pol), ("oracle", orc)):
        problems, _ = compare(duck, other, ("duckdb", name))
        assert problems == [], problems
    # Exact money: the single-node engines aggregate integer cents.
    assert duck["order_kpis"] == pol["order_kpis"]


def test_malformed_rows_and_quoted_commas(tmp_path: Path) -> None:
    folder = tmp_path / "order_lines"
    folder.mkdir()
    path = folder / "order_lines_part1.csv"
    path.write_text(
        "order_id,customer_id,order_date,category,product_id,quantity,unit_price,returned\n"
        "O1,C1,2025-07-01,Books,P1,2,10.50,false\n"
        "O2,C1,2025-07-01,Books,P2,1\n"  # malformed: too few fields
        '"O3",C2,2025-07-01,"Books",P1,1,3.00,TRUE\n'  # quoted fields are fine
        "O4,C2,2025-07-02,Books,P1,1,3.005,false\n"  # more than 2 decimals
    )
    batch = {"order_lines": [path]}
    duck, pol = _duckdb(batch), _polars(batch)
    assert duck["counts"] == pol["counts"] == {"order_lines": {"valid": 2, "quarantined": 2}}
    assert compare(duck, pol, ("duckdb", "polars"))[0] == []
    assert str(pol["order_kpis"]["2025-07-01"]["total_revenue"]) == "24.00"


def test_sizes_parse_and_print() -> None:
    assert [parse_size(s) for s in ("100k", "1M", "2M", "10M", "2500")] == [100_000, 1_000_000, 2_000_000, 10_000_000, 2500]
    assert [size_label(n) for n in (100_000, 1_000_000, 2500)] == ["100k", "1M", "2500"]
