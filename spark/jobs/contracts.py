"""Dataset contracts: the YAML files in ``contracts/`` loaded into typed, frozen dataclasses.

The YAML is itself validated here (unknown keys, unknown types, rules that do not fit the
type, keys/references naming missing columns) so a typo in a contract fails loudly at job
start instead of silently accepting bad rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, cast, get_args

import yaml

from cartflow.core.exceptions import CartflowError

ColumnType = Literal["string", "int", "long", "double", "date", "timestamp", "boolean"]
COLUMN_TYPES: tuple[str, ...] = get_args(ColumnType)
NUMERIC_TYPES = frozenset({"int", "long", "double"})

_COLUMN_KEYS = frozenset({"type", "required", "min", "max", "allowed", "pattern", "max_length", "decimals"})
_CONTRACT_KEYS = frozenset({"dataset", "version", "key", "columns", "references"})
_REFERENCE_KEYS = frozenset({"column", "dataset", "key"})


class ContractError(CartflowError, ValueError):
    """A contract file is not a valid contract; the message names the file and the problem."""


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    required: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None
    pattern: str | None = None
    max_length: int | None = None  # characters, after trimming
    decimals: int | None = None  # most digits after the decimal point (money columns)


@dataclass(frozen=True)
class Reference:
    """``column`` of this dataset must exist as ``dataset.key`` (referential integrity)."""

    column: str
    dataset: str
    key: str


@dataclass(frozen=True)
class Contract:
    dataset: str
    version: int
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    references: tuple[Reference, ...] = ()

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.dataset} has no column {name!r}")


def contracts_dir() -> Path:
    """The packaged contracts folder (works for editable and wheel installs)."""
    return Path(str(resources.files("spark.jobs") / "contracts"))


def load_contracts(directory: Path | None = None) -> dict[str, Contract]:
    """Load every ``*.yaml`` in ``directory`` and check cross-contract references."""
    directory = directory or contracts_dir()
    paths = sorted(directory.glob("*.yaml")) if directory.is_dir() else []
    if not paths:
        raise ContractError(f"{directory}: no contract files (*.yaml) there; check CARTFLOW_CONTRACTS_DIR")
    contracts: dict[str, Contract] = {}
    for path in paths:
        contract = load_contract_file(path)
        if contract.dataset in contracts:
            raise ContractError(f"{path}: dataset {contract.dataset!r} is defined twice")
        contracts[contract.dataset] = contract
    _check_references_resolve(contracts)
    return contracts


def load_contract_file(path: Path) -> Contract:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ContractError(f"{path}: not valid YAML: {exc}") from exc
    contract = parse_contract(doc, source=str(path))
    if contract.dataset != path.stem:
        # The file name is how humans find a contract; keep it equal to the dataset name.
        raise ContractError(f"{path}: dataset {contract.dataset!r} does not match the file name")
    return contract


def parse_contract(doc: Any, source: str = "<contract>") -> Contract:
    """Build a Contract from an already-parsed YAML document."""
    if not isinstance(doc, dict):
        raise ContractError(f"{source}: a contract must be a mapping, got {type(doc).__name__}")
    _reject_unknown_keys(doc, _CONTRACT_KEYS, source)
    for required in ("dataset", "version", "key", "columns"):
        if required not in doc:
            raise ContractError(f"{source}: missing {required!r}")

    dataset = doc["dataset"]
    if not isinstance(dataset, str) or not re.fullmatch(r"[a-z_]+", dataset):
        raise ContractError(f"{source}: dataset must be a lower_snake_case name, got {dataset!r}")

    version = doc["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ContractError(f"{source}: version must be a positive integer, got {version!r}")

    raw_columns = doc["columns"]
    if not isinstance(raw_columns, dict) or not raw_columns:
        raise ContractError(f"{source}: columns must be a non-empty mapping of name -> rules")
    columns = tuple(_parse_column(name, rules, f"{source}: column {name!r}") for name, rules in raw_columns.items())
    names = {c.name for c in columns}

    key = _parse_key(doc["key"], names, source)
    references = _parse_references(doc.get("references") or [], names, source)
    return Contract(dataset=dataset, version=version, key=key, columns=columns, references=references)


def _parse_column(name: Any, rules: Any, where: str) -> Column:
    if not isinstance(name, str) or not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ContractError(f"{where}: column names must be lower_snake_case")
    if not isinstance(rules, dict):
        raise ContractError(f"{where}: rules must be a mapping like {{type: string}}")
    _reject_unknown_keys(rules, _COLUMN_KEYS, where)

    col_type = rules.get("type")
    if col_type not in COLUMN_TYPES:
        raise ContractError(f"{where}: unknown type {col_type!r} (known: {', '.join(COLUMN_TYPES)})")

    required = rules.get("required", False)
    if not isinstance(required, bool):
        raise ContractError(f"{where}: required must be true or false, got {required!r}")

    low, high = rules.get("min"), rules.get("max")
    for label, bound in (("min", low), ("max", high)):
        if bound is None:
            continue
        if col_type not in NUMERIC_TYPES:
            raise ContractError(f"{where}: {label} only applies to numeric types, not {col_type}")
        if isinstance(bound, bool) or not isinstance(bound, (int, float)):
            raise ContractError(f"{where}: {label} must be a number, got {bound!r}")
        if col_type in ("int", "long") and not float(bound).is_integer():
            raise ContractError(f"{where}: {label} of an integer column must be whole, got {bound!r}")
    if low is not None and high is not None and low > high:
        raise ContractError(f"{where}: min {low} is greater than max {high}")

    allowed = rules.get("allowed")
    if allowed is not None:
        if col_type != "string":
            raise ContractError(f"{where}: allowed only applies to string columns")
        if not isinstance(allowed, list) or not allowed or not all(isinstance(v, str) for v in allowed):
            raise ContractError(f"{where}: allowed must be a non-empty list of strings")
        allowed = tuple(allowed)

    pattern = rules.get("pattern")
    if pattern is not None:
        if col_type != "string":
            raise ContractError(f"{where}: pattern only applies to string columns")
        if not isinstance(pattern, str):
            raise ContractError(f"{where}: pattern must be a string")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ContractError(f"{where}: invalid pattern {pattern!r}: {exc}") from exc

    max_length = rules.get("max_length")
    if max_length is not None:
        if col_type != "string":
            raise ContractError(f"{where}: max_length only applies to string columns")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ContractError(f"{where}: max_length must be a positive integer, got {max_length!r}")

    decimals = rules.get("decimals")
    if decimals is not None:
        if col_type != "double":
            raise ContractError(f"{where}: decimals only applies to double columns")
        if isinstance(decimals, bool) or not isinstance(decimals, int) or decimals < 0:
            raise ContractError(f"{where}: decimals must be a non-negative integer, got {decimals!r}")

    return Column(
        name=name,
        type=cast(ColumnType, col_type),
        required=required,
        min=low,
        max=high,
        allowed=allowed,
        pattern=pattern,
        max_length=max_length,
        decimals=decimals,
    )


def _parse_key(raw: Any, names: set[str], source: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not raw or not all(isinstance(k, str) for k in raw):
        raise ContractError(f"{source}: key must be a non-empty list of column names")
    missing = [k for k in raw if k not in names]
    if missing:
        raise ContractError(f"{source}: key column(s) {missing} are not declared columns")
    if len(set(raw)) != len(raw):
        raise ContractError(f"{source}: key lists a column twice")
    return tuple(raw)


def _parse_references(raw: Any, names: set[str], source: str) -> tuple[Reference, ...]:
    if not isinstance(raw, list):
        raise ContractError(f"{source}: references must be a list")
    refs = []
    for i, item in enumerate(raw):
        where = f"{source}: references[{i}]"
        if not isinstance(item, dict):
            raise ContractError(f"{where}: must be a mapping {{column, dataset, key}}")
        _reject_unknown_keys(item, _REFERENCE_KEYS, where)
        if not all(isinstance(item.get(k), str) for k in _REFERENCE_KEYS):
            raise ContractError(f"{where}: column, dataset and key are required strings")
        if item["column"] not in names:
            raise ContractError(f"{where}: column {item['column']!r} is not a declared column")
        refs.append(Reference(column=item["column"], dataset=item["dataset"], key=item["key"]))
    return tuple(refs)


def _check_references_resolve(contracts: dict[str, Contract]) -> None:
    for contract in contracts.values():
        for ref in contract.references:
            target = contracts.get(ref.dataset)
            if target is None:
                raise ContractError(f"{contract.dataset}: references unknown dataset {ref.dataset!r}")
            if ref.key not in target.column_names:
                raise ContractError(f"{contract.dataset}: references {ref.dataset}.{ref.key}, which is not a column")
            if target.key != (ref.key,):
                # The anti-join is only meaningful against the referenced dataset's own key.
                raise ContractError(f"{contract.dataset}: {ref.dataset}.{ref.key} is not the key of {ref.dataset}")
            if contract.column(ref.column).type != target.column(ref.key).type:
                raise ContractError(f"{contract.dataset}.{ref.column} and {ref.dataset}.{ref.key} have different types")


def dependency_order(contracts: dict[str, Contract], present: Iterable[str]) -> list[str]:
    """Datasets of the batch, each after the datasets it references (their valid rows feed RI)."""
    present = set(present)
    ordered: list[str] = []

    def visit(dataset: str, path: tuple[str, ...]) -> None:
        if dataset in ordered or dataset not in present:
            return
        if dataset in path:
            raise ValueError(f"reference cycle between contracts: {' -> '.join((*path, dataset))}")
        for ref in contracts[dataset].references:
            visit(ref.dataset, (*path, dataset))
        ordered.append(dataset)

    for dataset in sorted(present):
        visit(dataset, ())
    return ordered


def _reject_unknown_keys(mapping: dict[Any, Any], known: frozenset[str], where: str) -> None:
    unknown = sorted(str(k) for k in mapping if k not in known)
    if unknown:
        raise ContractError(f"{where}: unknown field(s) {unknown} (known: {', '.join(sorted(known))})")
