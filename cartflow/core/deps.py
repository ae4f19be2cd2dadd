"""What every function core needs: settings, AWS clients and a clock (injected for tests)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from cartflow.core.aws import AwsClients
from cartflow.core.config import Settings, get_settings

_SER = TypeSerializer()
_DESER = TypeDeserializer()


@dataclass
class Deps:
    settings: Settings
    clients: AwsClients
    clock: Callable[[], float] = field(default=time.time)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> Deps:
        s = settings or get_settings()
        return cls(settings=s, clients=AwsClients(s))

    def now(self) -> float:
        return self.clock()

    def now_ms(self) -> int:
        return int(self.clock() * 1000)


_current: Deps | None = None


def current_deps() -> Deps:
    """The deps handlers use: built once per process (a Lambda container) from the environment."""
    global _current  # noqa: PLW0603 - the process-wide deps singleton is this module's purpose
    if _current is None:
        _current = Deps.from_settings()
    return _current


def use_deps(deps: Deps | None) -> None:
    """Point every handler at these deps (tests, the embedded stack); None resets."""
    global _current  # noqa: PLW0603 - replaces the process-wide deps singleton above
    _current = deps


def query_items(ddb: Any, limit: int | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """Every item of a Query (all pages, or the first `limit`), as plain Python values."""
    config = {"MaxItems": limit} if limit else {}
    pages = ddb.get_paginator("query").paginate(**kwargs, PaginationConfig=config)
    return [from_ddb(i) for page in pages for i in page.get("Items", [])]


def scan_items(ddb: Any, table: str) -> list[dict[str, Any]]:
    """Every item of a table (consistent read), as plain Python values."""
    pages = ddb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
    return [from_ddb(i) for page in pages for i in page["Items"]]


def to_ddb(item: dict[str, Any]) -> dict[str, Any]:
    """Plain Python -> DynamoDB wire format (floats become exact Decimals)."""
    return {k: _SER.serialize(_decimalize(v)) for k, v in item.items()}


def from_ddb(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _DESER.deserialize(v) for k, v in item.items()}


def _decimalize(v: Any) -> Any:
    if isinstance(v, float):
        return Decimal(repr(v))
    if isinstance(v, list):
        return [_decimalize(x) for x in v]
    if isinstance(v, dict):
        return {k: _decimalize(x) for k, x in v.items()}
    return v


def values(**kw: Any) -> dict[str, Any]:
    """ExpressionAttributeValues from keyword args: values(b="x") -> {":b": {"S": "x"}}."""
    return {f":{k}": _SER.serialize(_decimalize(v)) for k, v in kw.items()}
