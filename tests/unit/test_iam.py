"""cartflow/infra/iam.py: least-privilege policy documents derived from the resource spec."""

from __future__ import annotations

import copy
import json
from fnmatch import fnmatchcase
from typing import Any

import pytest

from cartflow.core.spec import defaults, load_spec, render
from cartflow.infra import iam

SPEC = load_spec()
VALUES = defaults(SPEC)
AWS_VALUES = {**VALUES, "state_machine_target": "aws"}
TARGETS = {"local": VALUES, "aws": AWS_VALUES}

# The only Resource "*" AWS forces on us (no resource-level permissions for the action).
STAR_ALLOWED = {("stream-trigger", "dynamodb:ListStreams")}
KNOWN_SERVICES = {"sqs", "dynamodb", "states", "s3", "sns", "ecs", "iam", "events"}

# Pinned action sets: widening a principal must be a deliberate change to this table.
EXPECTED_ACTIONS: dict[str, set[str]] = {
    "ingest": {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:ChangeMessageVisibility",
        "dynamodb:PutItem",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
    },
    "debouncer": {"dynamodb:Query", "dynamodb:UpdateItem", "dynamodb:PutItem", "s3:DeleteObjectVersion"},
    "stream-trigger": {
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
        "dynamodb:DescribeStream",
        "dynamodb:ListStreams",
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:Query",
        "states:StartExecution",
    },
    "controller": {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:Query",
        "states:StartExecution",
        "states:DescribeExecution",
        "states:StopExecution",
        "sns:Publish",
    },
    "state-machine": {
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:GetObjectTagging",
        "s3:GetObjectVersionTagging",
        "s3:DeleteObjectVersion",
        "s3:PutObject",
        "s3:PutObjectTagging",
        "s3:DeleteObject",
        "dynamodb:UpdateItem",
        "dynamodb:GetItem",  # ReadResult: the job results table
        "sns:Publish",
        "ecs:RunTask",
        "ecs:DescribeTasks",
        "ecs:StopTask",
        "ecs:TagResource",
        "iam:PassRole",
        "events:PutTargets",
        "events:PutRule",
        "events:DescribeRule",
    },
    "spark-job": {
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "dynamodb:BatchWriteItem",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
    },
}


def statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["Statement"])


def as_list(x: str | list[str]) -> list[str]:
    return [x] if isinstance(x, str) else list(x)


def allows(doc: dict[str, Any], action: str, resource: str) -> bool:
    """Tiny IAM evaluator: explicit Deny wins, then any Allow. Conditions are ignored, which
    only ever makes the answer *more* permissive, so "cannot" assertions stay sound."""

    def hit(stmt: dict[str, Any]) -> bool:
        return any(fnmatchcase(action.lower(), a.lower()) for a in as_list(stmt["Action"])) and any(
            fnmatchcase(resource, r) for r in as_list(stmt["Resource"])
        )

    if any(s["Effect"] == "Deny" and hit(s) for s in statements(doc)):
        return False
    return any(s["Effect"] == "Allow" and hit(s) for s in statements(doc))


def spec_resources(values: dict[str, Any]) -> set[str]:
    """Every ARN (or ARN/prefix pattern) a resource of the rendered spec can be addressed by."""
    r = render(SPEC, values)
    region, acct = values["region"], values["account_id"]
    out: set[str] = set()
    for t in r["tables"]:
        table = f"arn:aws:dynamodb:{region}:{acct}:table/{t['name']}"
        out.add(table)
        out.update(f"{table}/index/{i['name']}" for i in t.get("indexes", []))
        if t.get("stream"):
            out.add(f"{table}/stream/*")
    out.update(f"arn:aws:sqs:{region}:{acct}:{q['name']}" for q in r["queues"])
    out.update(f"arn:aws:sns:{region}:{acct}:{name}" for name in r["topics"])
    bucket = r["bucket"]["name"]
    out.add(f"arn:aws:s3:::{bucket}")
    out.update(f"arn:aws:s3:::{bucket}/{p}*" for p in r["bucket"]["prefixes"])
    sm = r["state_machine"]["name"]
    out.add(f"arn:aws:states:{region}:{acct}:stateMachine:{sm}")
    out.add(f"arn:aws:states:{region}:{acct}:execution:{sm}:*")
    return out


def ecs_target_resources(values: dict[str, Any]) -> set[str]:
    """The AWS target's ECS-side ARNs (not spec resources; names from iam.ECS_DEFAULTS)."""
    region, acct = values["region"], values["account_id"]
    return {
        f"arn:aws:ecs:{region}:{acct}:task-definition/cartflow-spark-job:*",
        f"arn:aws:ecs:{region}:{acct}:task/cartflow/*",
        f"arn:aws:iam::{acct}:role/cartflow-spark-job-task",
        f"arn:aws:iam::{acct}:role/cartflow-spark-job-execution",
        f"arn:aws:events:{region}:{acct}:rule/StepFunctionsGetEventsForECSTaskRule",
    }


@pytest.fixture(params=sorted(TARGETS), ids=lambda t: f"target={t}")
def docs(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    return iam.policies(TARGETS[request.param])


# --------------------------------------------------------------------------- shape


def test_one_versioned_document_per_principal(docs: dict[str, dict[str, Any]]) -> None:
    assert tuple(docs) == iam.PRINCIPALS
    for name, doc in docs.items():
        assert doc["Version"] == "2012-10-17", name
        assert doc["Statement"], name
        sids = [s["Sid"] for s in doc["Statement"]]
        assert len(sids) == len(set(sids)), f"{name}: duplicate Sid"
        for s in doc["Statement"]:
            assert s["Sid"].isalnum(), s["Sid"]
            assert s["Effect"] in ("Allow", "Deny")
            assert as_list(s["Action"]) and as_list(s["Resource"])
            assert set(s) <= {"Sid", "Effect", "Action", "Resource", "Condition"}
        json.dumps(doc)  # serialisable as-is


def test_documents_fit_the_managed_policy_size_limit(docs: dict[str, dict[str, Any]]) -> None:
    for name, doc in docs.items():
        compact = "".join(json.dumps(doc).split())  # IAM does not count whitespace
        assert len(compact) < 6144, name


def test_no_wildcard_actions(docs: dict[str, dict[str, Any]]) -> None:
    for name, doc in docs.items():
        for s in doc["Statement"]:
            for action in as_list(s["Action"]):
                service, _, op = action.partition(":")
                assert service in KNOWN_SERVICES and op, f"{name}: {action}"
                assert "*" not in action and "?" not in action, f"{name}: wildcard action {action}"


def test_no_star_resource_except_where_aws_requires_it(docs: dict[str, dict[str, Any]]) -> None:
    for name, doc in docs.items():
        for s in doc["Statement"]:
            if "*" in as_list(s["Resource"]):
                assert s["Effect"] == "Allow"
                assert {(name, a) for a in as_list(s["Action"])} <= STAR_ALLOWED, f"{name}: {s}"
                assert s["Resource"] == ["*"], "a '*' statement must hold nothing else"


def test_action_sets_are_pinned() -> None:
    for name, doc in iam.policies(AWS_VALUES).items():
        actions = {a for s in doc["Statement"] if s["Effect"] == "Allow" for a in as_list(s["Action"])}
        assert actions == EXPECTED_ACTIONS[name], name


# --------------------------------------------------------------------------- resources


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_resource_is_a_spec_resource(target: str) -> None:
    values = TARGETS[target]
    known = spec_resources(values) | {"*"}
    extra = ecs_target_resources(values)
    for name, doc in iam.policies(values).items():
        for s in doc["Statement"]:
            for resource in as_list(s["Resource"]):
                if name == "state-machine" and target == "aws" and resource in extra:
                    continue
                assert resource in known, f"{name}/{s['Sid']}: {resource} is not in the rendered spec"


def test_ecs_statements_only_for_the_aws_target() -> None:
    local = json.dumps(iam.policies(VALUES)["state-machine"])
    assert "ecs:" not in local and "iam:PassRole" not in local
    aws = iam.policies(AWS_VALUES)["state-machine"]
    cluster = "arn:aws:ecs:us-east-1:000000000000:cluster/cartflow"
    for s in aws["Statement"]:
        if any(a in ("ecs:RunTask", "ecs:StopTask", "ecs:DescribeTasks") for a in as_list(s["Action"])):
            assert s["Condition"] == {"ArnEquals": {"ecs:cluster": cluster}}
        if "iam:PassRole" in as_list(s["Action"]):
            assert s["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}


def test_ecs_names_can_be_overridden() -> None:
    values = {**AWS_VALUES, "ecs_cluster": "prod", "ecs_task_definition": "spark", "ecs_task_role": "job-role"}
    text = json.dumps(iam.policies(values)["state-machine"])
    assert "cluster/prod" in text and "task/prod/*" in text and "task-definition/spark:*" in text
    assert "role/job-role" in text and "role/spark-execution" in text
    assert "cartflow-spark-job" not in text


# --------------------------------------------------------------------------- who can do what


BUCKET = "arn:aws:s3:::cartflow-data"
CHUNKS = "arn:aws:dynamodb:us-east-1:000000000000:table/cartflow-batch-chunks"


def test_spark_job_cannot_delete_or_overwrite_raw(docs: dict[str, dict[str, Any]]) -> None:
    spark = docs["spark-job"]
    raw = f"{BUCKET}/raw/orders/2024-01-01/orders.csv"
    assert allows(spark, "s3:GetObject", raw)
    assert not allows(spark, "s3:DeleteObject", raw)
    assert not allows(spark, "s3:PutObject", raw)
    # ... and can write where it should, nowhere else.
    assert allows(spark, "s3:DeleteObject", f"{BUCKET}/validated/orders/part-0.parquet")
    assert allows(spark, "s3:PutObject", f"{BUCKET}/validation_output/b1.json")
    assert not allows(spark, "s3:PutObject", f"{BUCKET}/processed/b1/orders.csv")
    assert not allows(spark, "s3:DeleteObject", f"{BUCKET}/validation_output/b1.json")
    # the deletion of raw files belongs to the state machine (after archiving)
    assert allows(docs["state-machine"], "s3:DeleteObject", raw)
    assert not allows(docs["state-machine"], "s3:DeleteObject", f"{BUCKET}/processed/b1/orders.csv")


def test_spark_job_lists_only_its_prefixes(docs: dict[str, dict[str, Any]]) -> None:
    (stmt,) = [s for s in docs["spark-job"]["Statement"] if "s3:ListBucket" in as_list(s["Action"])]
    assert stmt["Resource"] == [BUCKET]
    assert sorted(stmt["Condition"]["StringLike"]["s3:prefix"]) == [
        "file_registry/*",
        "kpis/*",
        "quarantine/*",
        "raw/*",
        "staging/*",
        "validated/*",
    ]


def test_ingest_cannot_touch_batch_chunks(docs: dict[str, dict[str, Any]]) -> None:
    ingest = docs["ingest"]
    for target in (CHUNKS, f"{CHUNKS}/index/by_status", f"{CHUNKS}/stream/2024-01-01T00:00:00.000"):
        for s in ingest["Statement"]:
            assert not any(fnmatchcase(target, r) for r in as_list(s["Resource"])), (s["Sid"], target)
    assert not allows(ingest, "dynamodb:PutItem", CHUNKS)
    assert "s3:" not in json.dumps(ingest) and "states:" not in json.dumps(ingest)


def test_lambdas_have_no_s3_but_version_drops_and_only_dispatchers_start_executions(docs: dict[str, dict[str, Any]]) -> None:
    sm = "arn:aws:states:us-east-1:000000000000:stateMachine:cartflow-batch"
    for name in ("ingest", "stream-trigger", "controller"):
        assert "s3:" not in json.dumps(docs[name]), name
    # The debouncer drops superseded raw versions, and can do nothing else to S3.
    (drop,) = [st for st in docs["debouncer"]["Statement"] if "s3:" in json.dumps(st)]
    assert as_list(drop["Action"]) == ["s3:DeleteObjectVersion"] and as_list(drop["Resource"]) == [f"{BUCKET}/raw/*"]
    assert {n for n, d in docs.items() if allows(d, "states:StartExecution", sm)} == {"stream-trigger", "controller"}
    execution = "arn:aws:states:us-east-1:000000000000:execution:cartflow-batch:b1"
    assert allows(docs["controller"], "states:StopExecution", execution)
    assert not allows(docs["stream-trigger"], "states:StopExecution", execution)


def test_debouncer_transaction_is_covered(docs: dict[str, dict[str, Any]]) -> None:
    deb = docs["debouncer"]
    events = "arn:aws:dynamodb:us-east-1:000000000000:table/cartflow-events"
    assert allows(deb, "dynamodb:Query", f"{events}/index/unbatched")
    assert allows(deb, "dynamodb:UpdateItem", events) and allows(deb, "dynamodb:PutItem", CHUNKS)
    assert not allows(deb, "dynamodb:UpdateItem", CHUNKS) and not allows(deb, "dynamodb:PutItem", events)
    assert not allows(deb, "dynamodb:Query", events)  # the base table is never queried


# --------------------------------------------------------------------------- derived from values + spec


def test_renaming_resources_via_values_changes_the_arns() -> None:
    values = {
        **AWS_VALUES,
        "batch_chunks_table": "renamed-chunks",
        "events_table": "renamed-events",
        "bucket": "renamed-bucket",
        "region": "eu-west-1",
        "account_id": "123456789012",
    }
    docs = iam.policies(values)
    text = json.dumps(docs)
    for old in ("cartflow-batch-chunks", "cartflow-events", "cartflow-data", "us-east-1", "000000000000"):
        assert old not in text, old
    chunks = "arn:aws:dynamodb:eu-west-1:123456789012:table/renamed-chunks"
    assert allows(docs["debouncer"], "dynamodb:PutItem", chunks)
    assert allows(docs["stream-trigger"], "dynamodb:GetRecords", f"{chunks}/stream/2024-01-01T00:00:00.000")
    assert allows(docs["controller"], "dynamodb:Query", f"{chunks}/index/by_status")
    assert allows(docs["ingest"], "dynamodb:PutItem", "arn:aws:dynamodb:eu-west-1:123456789012:table/renamed-events")
    assert allows(docs["spark-job"], "s3:GetObject", "arn:aws:s3:::renamed-bucket/raw/x.csv")
    # still only spec resources
    known = spec_resources(values) | ecs_target_resources(values) | {"*"}
    assert {r for d in docs.values() for s in d["Statement"] for r in as_list(s["Resource"])} <= known


def _spec_without(table_key: str, drop: str) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    (table,) = [t for t in spec["tables"] if t["name"] == "{" + table_key + "}"]
    table.pop(drop)
    return spec


def test_a_resource_missing_from_the_spec_is_an_error() -> None:
    with pytest.raises(KeyError, match="by_status"):
        iam.policies(VALUES, _spec_without("batch_chunks_table", "indexes"))
    with pytest.raises(KeyError, match="no stream"):
        iam.policies(VALUES, _spec_without("batch_chunks_table", "stream"))
    spec = copy.deepcopy(SPEC)
    spec["bucket"]["prefixes"].remove("processed/")
    with pytest.raises(KeyError, match="processed/"):
        iam.policies(VALUES, spec)


def test_main_prints_json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTFLOW_BATCH_CHUNKS_TABLE", "env-chunks")
    monkeypatch.setenv("CARTFLOW_STATE_MACHINE_TARGET", "aws")
    monkeypatch.setenv("CARTFLOW_ECS_CLUSTER", "env-cluster")
    assert iam.main([]) == 0
    out = json.loads(capsys.readouterr().out)
    assert tuple(out) == iam.PRINCIPALS
    assert "table/env-chunks" in json.dumps(out["controller"])
    assert "cluster/env-cluster" in json.dumps(out["state-machine"])
    assert iam.main(["spark-job"]) == 0
    assert tuple(json.loads(capsys.readouterr().out)) == ("spark-job",)
    assert iam.main(["nobody"]) == 2
