"""cartflow/core/spec.py: the typed resource spec is spec.yaml, rendered, and refuses what it cannot describe."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cartflow.core.spec import SpecError, defaults, load, load_spec, render

RAW = load_spec()
VALUES = {**defaults(RAW), "bucket": "other-bucket", "ingest_queue": "q2", "events_table": "ev2"}


def test_the_typed_spec_is_the_rendered_yaml() -> None:
    spec, rendered = load(VALUES), render(RAW, VALUES)
    assert spec.bucket.name == rendered["bucket"]["name"] == "other-bucket"
    assert list(spec.bucket.prefixes) == rendered["bucket"]["prefixes"]
    assert [(n.queue, list(n.events), n.prefix) for n in spec.bucket.notifications] == [
        (n["queue"], n["events"], n["prefix"]) for n in rendered["bucket"]["notifications"]
    ]
    for q, raw in zip(spec.queues, rendered["queues"], strict=True):
        assert (q.name, q.visibility_timeout_seconds, q.message_retention_seconds, q.allow_s3_bucket) == (
            raw["name"],
            raw.get("visibility_timeout_seconds"),
            raw.get("message_retention_seconds"),
            raw.get("allow_s3_bucket"),
        )
        typed = (q.dead_letter.queue, q.dead_letter.max_receive_count) if q.dead_letter else None
        assert typed == ((raw["dead_letter_queue"], raw["max_receive_count"]) if "dead_letter_queue" in raw else None)
    for t, raw in zip(spec.tables, rendered["tables"], strict=True):
        assert (t.name, t.attributes, t.stream, t.ttl) == (raw["name"], raw["attributes"], raw.get("stream"), raw.get("ttl"))
        assert (t.key.hash, t.key.range) == (raw["key"]["hash"], raw["key"].get("range"))
        assert [(i.name, i.key.hash, i.key.range) for i in t.indexes] == [
            (i["name"], i["hash"], i.get("range")) for i in raw.get("indexes", [])
        ]
    assert [t.name for t in spec.topics] == rendered["topics"]
    assert [a.name for a in spec.activities] == rendered["activities"]
    assert (spec.state_machine.name, spec.state_machine.role) == (
        rendered["state_machine"]["name"],
        rendered["state_machine"]["role"],
    )


def test_spec_names_do_not_depend_on_the_values() -> None:
    assert (
        [q.spec_name for q in load(VALUES).queues]
        == [q.spec_name for q in load().queues]
        == [
            "{ingest_queue}-dlq",
            "{ingest_queue}",
        ]
    )
    assert load(VALUES).table("ev2").spec_name == "{events_table}"


def test_key_schema_is_dynamodbs() -> None:
    events = load().table("cartflow-events")
    assert events.key.schema() == [
        {"AttributeName": "group_key", "KeyType": "HASH"},
        {"AttributeName": "arrival_timestamp", "KeyType": "RANGE"},
    ]
    assert load().table("cartflow-idempotency").key.schema() == [{"AttributeName": "id", "KeyType": "HASH"}]


def _broken(mutate: Any) -> dict[str, Any]:
    raw = copy.deepcopy(RAW)
    mutate(raw)
    return raw


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["tables"][0].update(ttl_attribute="x"), "unknown 'ttl_attribute'"),
        (lambda r: r["tables"][0].pop("key"), "missing 'key'"),
        (lambda r: r["queues"][1].pop("max_receive_count"), "go together"),
        (lambda r: r["queues"][0].update(message_retention_seconds="long"), "expected an integer"),
        (lambda r: r["bucket"]["notifications"][0].update(queue="nowhere"), "queue 'nowhere' is not declared"),
        (lambda r: r["queues"][1].update(dead_letter_queue="nowhere"), "queue 'nowhere' is not declared"),
        (lambda r: r["topics"].append("{failure_topic}"), "duplicate topic"),
        (lambda r: r.update(functions=[]), "unknown 'functions'"),
    ],
)
def test_what_the_model_cannot_describe_is_an_error(mutate: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        load(raw=_broken(mutate))
