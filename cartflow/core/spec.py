"""The resource spec (spec.yaml): one description of every AWS resource, for every target.

``load(values)`` reads spec.yaml once into a typed ``Spec`` with every ``{name}`` placeholder
filled in from ``values``; the emulator applier (cartflow.infra.apply), the IAM policies
(cartflow.infra.iam) and the CloudFormation renderer (cartflow.infra.cloudformation) all read
that object, never the raw YAML. ``defaults`` / ``values_from_env`` give the values (the
settings take their defaults from here too).

Stdlib + PyYAML only: it also runs inside the emulator's ready.d hook, whose Python has
neither boto3 nor pydantic (hence dataclasses, not models).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cartflow.core.exceptions import CartflowError

SPEC_PATH = Path(__file__).with_name("spec.yaml")


class SpecError(CartflowError, ValueError):
    """The spec does not have the shape this module describes."""


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Named:
    """A resource with a name: ``name`` rendered with the values, ``spec_name`` as spec.yaml
    writes it (``{ingest_queue}-dlq``), which stays the same whatever the values are (the
    CloudFormation logical ids come from it)."""

    name: str
    spec_name: str


@dataclass(frozen=True)
class Notification:
    """S3 -> SQS: objects created under ``prefix`` are announced on ``queue``."""

    queue: str  # a queue of the spec
    events: tuple[str, ...]
    prefix: str


@dataclass(frozen=True)
class Bucket(Named):
    prefixes: tuple[str, ...] = ()  # folder markers, and the prefixes IAM grants by
    notifications: tuple[Notification, ...] = ()
    versioning: bool = False  # each upload keeps its own version until its batch is done
    # staging/ copies of a failed batch stay for its retry; expire them (and raw versions a
    # user deleted before their batch) after this many days. 0: never.
    noncurrent_days: int = 0

    def lifecycle_rules(self) -> list[dict[str, Any]]:
        """S3 lifecycle rules (API spelling): raw versions no batch will read again, and the
        staged copies a failed batch left for its retry."""
        days = self.noncurrent_days
        return [
            {"ID": "noncurrent-raw-versions", "Status": "Enabled", "Filter": {"Prefix": "raw/"},
             "NoncurrentVersionExpiration": {"NoncurrentDays": days}, "Expiration": {"ExpiredObjectDeleteMarker": True}},
            {"ID": "staged-copies", "Status": "Enabled", "Filter": {"Prefix": "staging/"}, "Expiration": {"Days": days}},
        ]  # fmt: skip


@dataclass(frozen=True)
class DeadLetter:
    queue: str  # a queue of the spec
    max_receive_count: int


@dataclass(frozen=True)
class Queue(Named):
    visibility_timeout_seconds: int | None = None
    message_retention_seconds: int | None = None
    dead_letter: DeadLetter | None = None
    allow_s3_bucket: str | None = None  # queue policy: only this bucket may send


@dataclass(frozen=True)
class Key:
    hash: str
    range: str | None = None

    def schema(self) -> list[dict[str, str]]:
        """DynamoDB's KeySchema (the same in the API and in CloudFormation)."""
        schema = [{"AttributeName": self.hash, "KeyType": "HASH"}]
        if self.range is not None:
            schema.append({"AttributeName": self.range, "KeyType": "RANGE"})
        return schema


@dataclass(frozen=True)
class Index:
    """A global secondary index (projection ALL)."""

    name: str
    key: Key


@dataclass(frozen=True)
class Table(Named):
    attributes: dict[str, str]  # attribute -> S | N | B, in spec order
    key: Key
    indexes: tuple[Index, ...] = ()
    stream: str | None = None  # StreamViewType
    ttl: str | None = None  # the TTL attribute

    def index(self, name: str) -> Index | None:
        return next((i for i in self.indexes if i.name == name), None)

    def definition(self) -> dict[str, Any]:
        """CreateTable's (and AWS::DynamoDB::Table's) shared properties: name, billing, keys,
        indexes. Streams and TTL are spelled differently by the API and by CloudFormation."""
        props: dict[str, Any] = {
            "TableName": self.name,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": a, "AttributeType": ty} for a, ty in self.attributes.items()],
            "KeySchema": self.key.schema(),
        }
        if self.indexes:
            props["GlobalSecondaryIndexes"] = [
                {"IndexName": i.name, "KeySchema": i.key.schema(), "Projection": {"ProjectionType": "ALL"}} for i in self.indexes
            ]
        return props


@dataclass(frozen=True)
class Topic(Named):
    pass


@dataclass(frozen=True)
class Activity(Named):
    pass


@dataclass(frozen=True)
class StateMachine(Named):
    role: str  # the role ARN the emulator applier gives it (CloudFormation makes its own)


@dataclass(frozen=True)
class Spec:
    bucket: Bucket
    queues: tuple[Queue, ...]
    tables: tuple[Table, ...]
    topics: tuple[Topic, ...]
    activities: tuple[Activity, ...]
    state_machine: StateMachine

    def __post_init__(self) -> None:
        # References inside the spec must name something it declares.
        for kind, names in (
            ("queue", [q.name for q in self.queues]),
            ("table", [t.name for t in self.tables]),
            ("topic", [t.name for t in self.topics]),
            ("activity", [a.name for a in self.activities]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise SpecError(f"duplicate {kind} name(s): {', '.join(dupes)}")
        for q in self.queues:
            if q.dead_letter:
                self.queue(q.dead_letter.queue)
        for n in self.bucket.notifications:
            self.queue(n.queue)

    def queue(self, name: str) -> Queue:
        for q in self.queues:
            if q.name == name:
                return q
        raise SpecError(f"queue {name!r} is not declared in the resource spec")

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise SpecError(f"table {name!r} is not declared in the resource spec")


# --------------------------------------------------------------------------- YAML -> model


def load_spec(path: Path = SPEC_PATH) -> dict[str, Any]:
    """spec.yaml as parsed YAML (placeholders not filled in)."""
    with path.open() as fh:
        spec: dict[str, Any] = yaml.safe_load(fh)
    return spec


def load(values: Mapping[str, Any] | None = None, raw: Mapping[str, Any] | None = None) -> Spec:
    """The typed spec: ``raw`` (default spec.yaml) with ``values`` (default its defaults) filled in."""
    raw = raw if raw is not None else load_spec()
    _fields(raw, "spec", ("defaults", "bucket", "state_machine"), ("queues", "tables", "topics", "activities"))
    values = values if values is not None else defaults(raw)
    return Spec(
        bucket=_bucket(_section(raw, "bucket"), values),
        queues=tuple(_queue(q, values) for q in _items(raw, "queues")),
        tables=tuple(_table(t, values) for t in _items(raw, "tables")),
        topics=tuple(Topic(render(t, values), t) for t in _names(raw, "topics")),
        activities=tuple(Activity(render(a, values), a) for a in _names(raw, "activities")),
        state_machine=_state_machine(_section(raw, "state_machine"), values),
    )


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    node = raw.get(name)
    if not isinstance(node, Mapping):
        raise SpecError(f"{name}: expected a mapping, got {node!r}")
    return node


def _items(raw: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    nodes = raw.get(name, [])
    if not isinstance(nodes, list) or not all(isinstance(n, Mapping) for n in nodes):
        raise SpecError(f"{name}: expected a list of mappings")
    return nodes


def _names(raw: Mapping[str, Any], name: str) -> list[str]:
    nodes = raw.get(name, [])
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise SpecError(f"{name}: expected a list of names")
    return nodes


def _fields(node: Mapping[str, Any], where: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """Every required key is there and nothing unknown is (a typo must not pass silently)."""
    if not isinstance(node, Mapping):
        raise SpecError(f"{where}: expected a mapping, got {node!r}")
    problems = [f"missing {k!r}" for k in required if k not in node]
    problems += [f"unknown {k!r}" for k in sorted(set(node) - set(required) - set(optional))]
    if problems:
        raise SpecError(f"{where}: {', '.join(problems)}")


def _int(node: Mapping[str, Any], key: str, where: str) -> int | None:
    value = node.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise SpecError(f"{where}.{key}: expected an integer, got {value!r}")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _bucket(raw: Mapping[str, Any], values: Mapping[str, Any]) -> Bucket:
    _fields(raw, "bucket", ("name",), ("prefixes", "notifications", "versioning", "noncurrent_days"))
    b = render(raw, values)
    notifications = []
    for i, n in enumerate(b.get("notifications", [])):
        where = f"bucket.notifications[{i}]"
        _fields(n, where, ("queue", "events", "prefix"))
        notifications.append(Notification(_str(n["queue"], where), tuple(n["events"]), _str(n["prefix"], where)))
    return Bucket(
        name=_str(b["name"], "bucket.name"),
        spec_name=raw["name"],
        prefixes=tuple(b.get("prefixes", [])),
        notifications=tuple(notifications),
        versioning=bool(b.get("versioning", False)),
        noncurrent_days=int(b.get("noncurrent_days", 0)),
    )


def _queue(raw: Mapping[str, Any], values: Mapping[str, Any]) -> Queue:
    where = f"queue {raw.get('name')!r}"
    optional = ("visibility_timeout_seconds", "message_retention_seconds", "dead_letter_queue", "max_receive_count")
    _fields(raw, where, ("name",), (*optional, "allow_s3_bucket"))
    q = render(raw, values)
    if ("dead_letter_queue" in q) != ("max_receive_count" in q):
        raise SpecError(f"{where}: dead_letter_queue and max_receive_count go together")
    max_receives = _int(q, "max_receive_count", where)
    return Queue(
        name=_str(q["name"], where),
        spec_name=raw["name"],
        visibility_timeout_seconds=_int(q, "visibility_timeout_seconds", where),
        message_retention_seconds=_int(q, "message_retention_seconds", where),
        dead_letter=DeadLetter(q["dead_letter_queue"], max_receives) if max_receives is not None else None,
        allow_s3_bucket=q.get("allow_s3_bucket"),
    )


def _key(raw: Mapping[str, Any], where: str) -> Key:
    _fields(raw, where, ("hash",), ("range",))
    return Key(_str(raw["hash"], f"{where}.hash"), raw.get("range"))


def _table(raw: Mapping[str, Any], values: Mapping[str, Any]) -> Table:
    where = f"table {raw.get('name')!r}"
    _fields(raw, where, ("name", "attributes", "key"), ("indexes", "stream", "ttl"))
    t = render(raw, values)
    indexes = []
    for i in t.get("indexes", []):
        _fields(i, f"{where} index", ("name", "hash"), ("range",))
        indexes.append(Index(i["name"], _key({k: v for k, v in i.items() if k != "name"}, f"{where} index {i['name']!r}")))
    return Table(
        name=_str(t["name"], where),
        spec_name=raw["name"],
        attributes={_str(a, where): _str(ty, f"{where}.attributes.{a}") for a, ty in dict(t["attributes"]).items()},
        key=_key(t["key"], f"{where}.key"),
        indexes=tuple(indexes),
        stream=t.get("stream"),
        ttl=t.get("ttl"),
    )


def _state_machine(raw: Mapping[str, Any], values: Mapping[str, Any]) -> StateMachine:
    _fields(raw, "state_machine", ("name", "role"))
    sm = render(raw, values)
    return StateMachine(name=_str(sm["name"], "state_machine.name"), spec_name=raw["name"], role=sm["role"])


# --------------------------------------------------------------------------- values


def defaults(spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return dict((spec or load_spec())["defaults"])


def values_from_env(environ: Mapping[str, str], spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults overridden by CARTFLOW_<NAME>; for the ready.d hook (cartflow itself uses Settings)."""
    values = defaults(spec)
    for name, default in list(values.items()):
        raw = environ.get(f"CARTFLOW_{name.upper()}")
        if raw is not None:
            values[name] = type(default)(raw) if not isinstance(default, str) else raw
    return values


def render(node: Any, values: Mapping[str, Any]) -> Any:
    """Substitute {name} placeholders in every string of the spec."""
    if isinstance(node, str):
        return node.format_map(values)
    if isinstance(node, list):
        return [render(n, values) for n in node]
    if isinstance(node, dict):
        return {k: render(v, values) for k, v in node.items()}
    return node


def arn(values: Mapping[str, Any], service: str, resource: str) -> str:
    return f"arn:aws:{service}:{values['region']}:{values['account_id']}:{resource}"
