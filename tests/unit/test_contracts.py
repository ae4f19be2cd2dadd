"""The contract loader: the shipped YAML loads, and malformed contracts fail with clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from cartflow.core.models import DataType
from spark.jobs.contracts import Column, Contract, ContractError, load_contracts, parse_contract


def _doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "dataset": "things",
        "version": 1,
        "key": ["id"],
        "columns": {
            "id": {"type": "long", "required": True, "min": 1},
            "name": {"type": "string"},
        },
    }
    doc.update(overrides)
    return doc


def test_shipped_contracts_cover_every_data_type() -> None:
    contracts = load_contracts()
    assert set(contracts) == {t.value for t in DataType}


def test_shipped_order_items_contract_is_typed() -> None:
    items = load_contracts()["order_items"]
    assert items.key == ("id",)
    assert items.column("status").allowed == ("Processing", "Shipped", "Complete", "Cancelled", "Returned")
    assert items.column("sale_price") == Column(
        name="sale_price", type="double", required=True, min=0.0, max=100000.0, decimals=2
    )
    assert {(r.column, r.dataset, r.key) for r in items.references} == {
        ("order_id", "orders", "order_id"),
        ("product_id", "products", "id"),
    }


def test_flat_contract_has_composite_key_and_patterns() -> None:
    lines = load_contracts()["order_lines"]
    assert lines.key == ("order_id", "product_id")
    assert lines.column("order_id").pattern == "^[A-Za-z0-9_-]{1,64}$"
    assert lines.column("returned").type == "boolean"


def test_contract_is_frozen() -> None:
    contract = parse_contract(_doc())
    assert isinstance(contract, Contract)
    with pytest.raises(dataclasses.FrozenInstanceError):
        contract.dataset = "other"  # type: ignore[misc]
    assert contract.column_names == ("id", "name")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_doc(columns={"id": {"type": "integer"}}), "unknown type 'integer'"),
        (_doc(columns={"id": {"type": "long", "requird": True}}), "unknown field(s) ['requird']"),
        (_doc(columns={"id": {"type": "string", "min": 1}}), "min only applies to numeric types"),
        (_doc(columns={"id": {"type": "long", "min": 5, "max": 1}}), "min 5 is greater than max 1"),
        (_doc(columns={"id": {"type": "long", "min": 0.5}}), "must be whole"),
        (_doc(columns={"id": {"type": "long", "allowed": ["a"]}}), "allowed only applies to string"),
        (_doc(columns={"id": {"type": "string", "allowed": []}}), "non-empty list of strings"),
        (_doc(columns={"id": {"type": "string", "pattern": "("}}), "invalid pattern"),
        (_doc(columns={"id": {"type": "long", "required": "yes"}}), "required must be true or false"),
        (_doc(key=["nope"]), "key column(s) ['nope']"),
        (_doc(key="id"), "key must be a non-empty list"),
        (_doc(references=[{"column": "nope", "dataset": "x", "key": "id"}]), "'nope' is not a declared column"),
        (_doc(extra=1), "unknown field(s) ['extra']"),
        (["not", "a", "mapping"], "must be a mapping"),
    ],
)
def test_invalid_contracts_are_rejected_with_a_clear_message(doc: Any, message: str) -> None:
    with pytest.raises(ContractError) as info:
        parse_contract(doc, source="things.yaml")
    assert message in str(info.value)
    assert "things.yaml" in str(info.value)


def test_reference_to_unknown_dataset_is_rejected(tmp_path: Path) -> None:
    doc = _doc(references=[{"column": "id", "dataset": "ghosts", "key": "id"}])
    (tmp_path / "things.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ContractError, match="unknown dataset 'ghosts'"):
        load_contracts(tmp_path)


def test_reference_must_target_the_referenced_key(tmp_path: Path) -> None:
    (tmp_path / "things.yaml").write_text(yaml.safe_dump(_doc(references=[{"column": "id", "dataset": "owners", "key": "name"}])))
    (tmp_path / "owners.yaml").write_text(yaml.safe_dump(_doc(dataset="owners")))
    with pytest.raises(ContractError, match="not the key of owners"):
        load_contracts(tmp_path)


def test_file_name_must_match_dataset(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(_doc()))
    with pytest.raises(ContractError, match="does not match the file name"):
        load_contracts(tmp_path)


def test_broken_yaml_is_reported(tmp_path: Path) -> None:
    (tmp_path / "things.yaml").write_text("dataset: [unclosed\n")
    with pytest.raises(ContractError, match="not valid YAML"):
        load_contracts(tmp_path)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"type": "long", "max_length": 3}, "max_length only applies to string columns"),
        ({"type": "string", "max_length": 0}, "max_length must be a positive integer"),
        ({"type": "string", "decimals": 2}, "decimals only applies to double columns"),
        ({"type": "double", "decimals": -1}, "decimals must be a non-negative integer"),
    ],
)
def test_length_and_decimal_rules_fit_their_types(rules: dict[str, object], message: str) -> None:
    doc = _doc()
    doc["columns"]["extra"] = rules  # type: ignore[index]
    with pytest.raises(ContractError, match=message):
        parse_contract(doc)


def test_a_contract_declares_its_version() -> None:
    doc = _doc()
    del doc["version"]
    with pytest.raises(ContractError, match="missing 'version'"):
        parse_contract(doc)
