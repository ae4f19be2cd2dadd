"""cartflow.local.fixturegen: determinism, sizes, contract conformance (judged by the oracle)."""

from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

import pytest

from cartflow.local.fixturegen import generate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import oracle


def _data_rows(paths: list[Path]) -> int:
    return sum(sum(1 for _ in p.open()) - 1 for p in paths)


def _bytes(result: dict[str, list[Path]]) -> dict[str, list[bytes]]:
    return {ds: [p.read_bytes() for p in ps] for ds, ps in result.items()}


@pytest.mark.parametrize("shape", ["tables", "order_lines"])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, shape: str) -> None:
    a = generate(shape, 500, tmp_path / "a", seed=3, files=2, invalid_fraction=0.1)  # type: ignore[arg-type]
    b = generate(shape, 500, tmp_path / "b", seed=3, files=2, invalid_fraction=0.1)  # type: ignore[arg-type]
    c = generate(shape, 500, tmp_path / "c", seed=4, files=2, invalid_fraction=0.1)  # type: ignore[arg-type]
    assert _bytes(a) == _bytes(b)
    assert _bytes(a) != _bytes(c)


def test_layout_and_row_counts(tmp_path: Path) -> None:
    flat = generate("order_lines", 1000, tmp_path / "f", files=3)
    assert [p.relative_to(tmp_path / "f").as_posix() for p in flat["order_lines"]] == [
        f"order_lines/order_lines_part{k}.csv" for k in (1, 2, 3)
    ]
    assert _data_rows(flat["order_lines"]) == 1000
    assert all(_data_rows([p]) > 0 for p in flat["order_lines"])

    tables = generate("tables", 1000, tmp_path / "t", files=2)
    assert set(tables) == {"orders", "order_items", "products"}
    assert _data_rows(tables["order_items"]) == 1000
    assert len(tables["orders"]) == len(tables["order_items"]) == 2
    # num_of_item agrees with the items actually written
    with_items = Counter(r["order_id"] for p in tables["order_items"] for r in csv.DictReader(p.open()))
    declared = {r["order_id"]: int(r["num_of_item"]) for p in tables["orders"] for r in csv.DictReader(p.open())}
    assert with_items == Counter(declared)


def test_dates_stay_in_window(tmp_path: Path) -> None:
    flat = generate("order_lines", 2000, tmp_path, days=2, start_date="2025-07-06")
    dates = {r["order_date"] for r in csv.DictReader(flat["order_lines"][0].open())}
    assert dates == {"2025-07-06", "2025-07-07"}


@pytest.mark.parametrize("shape", ["tables", "order_lines"])
def test_valid_data_passes_the_oracle(tmp_path: Path, shape: str) -> None:
    batch = generate(shape, 3000, tmp_path, files=2)  # type: ignore[arg-type]
    assert oracle.quarantined_keys(batch) == []
    orders, cats = oracle.expected_kpis(batch)
    assert len(orders) == 3 and cats
    if shape == "tables":  # the generator produces returns and cancellations for the KPI branches
        statuses = Counter(r["status"] for r in csv.DictReader(batch["order_items"][0].open()))
        assert statuses["Returned"] and statuses["Cancelled"]
        assert any(o["return_rate"] > 0 for o in orders.values())


@pytest.mark.parametrize("shape", ["tables", "order_lines"])
def test_invalid_fraction_produces_a_mix_of_rejects(tmp_path: Path, shape: str) -> None:
    batch = generate(shape, 4000, tmp_path, invalid_fraction=0.1)  # type: ignore[arg-type]
    rejected = oracle.quarantined_keys(batch)
    kinds = Counter(r.reason.split(": ", 1)[-1].split(" ")[0] for r in rejected)
    assert 200 < len(rejected) < 2000
    expected = {"required", "not", "below", "above", "value", "duplicate", "malformed"}
    if shape == "tables":
        expected.add("no")  # dangling order_id / product_id
    else:
        expected.add("does")  # pattern
    assert set(kinds) >= expected


def test_valid_content_does_not_depend_on_invalid_fraction(tmp_path: Path) -> None:
    """Injection uses its own RNG stream: the unbroken rows are the same rows."""
    clean = generate("order_lines", 300, tmp_path / "a")["order_lines"][0].read_text().splitlines()
    dirty = generate("order_lines", 300, tmp_path / "b", invalid_fraction=0.2)["order_lines"][0].read_text().splitlines()
    assert len(clean) == len(dirty)
    assert 0.6 < sum(x == y for x, y in zip(clean, dirty, strict=True)) / len(clean) < 0.95


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate("order_lines", 0, tmp_path)
    with pytest.raises(ValueError):
        generate("order_lines", 10, tmp_path, invalid_fraction=1.5)
    with pytest.raises(ValueError):
        generate("nope", 10, tmp_path)  # type: ignore[arg-type]
