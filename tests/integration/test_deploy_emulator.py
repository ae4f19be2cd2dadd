"""`cartflow deploy` against MiniStack: dry run (change set printed, nothing left), then a real
deploy of the whole generated template, whose resources are compared with the resource spec
and with what `cartflow resources apply` creates from the same spec.

MiniStack 1.5.33 runs CloudFormation change sets (from the template `cartflow deploy` puts in
its artifact bucket: TemplateURL) and provisions every resource type the template uses (S3,
SQS, DynamoDB, SNS, IAM, Lambda, event source mappings, Scheduler, ECS, EC2 security groups,
Logs, Step Functions, CloudWatch alarms). Known gaps, checked offline instead
(tests/unit/test_deploy_template.py): it does not apply a table's TimeToLiveSpecification or
PointInTimeRecoverySpecification, and its change sets list conditional resources and report
unchanged ones as Modify. Running the deployed stack is tests/e2e/test_stack_in_emulator.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from cartflow.core.aws import AwsClients
from cartflow.core.config import RESOURCE_NAME_FIELDS, Settings
from cartflow.core.spec import load_spec, render
from cartflow.infra import apply_resources
from cartflow.infra.cloudformation import FUNCTIONS, build_template
from cartflow.infra.environment import FUNCTION_SETTINGS, JOB_SETTINGS, env_name
from cartflow.infra.ship import DeployRequest, deploy
from orchestrator.render import AWS_RETRY_DEFAULTS, build_definition, without_comments

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REGION = "us-east-1"
REGISTRY = f"000000000000.dkr.ecr.{REGION}.amazonaws.com"
SERVICES = f"{REGISTRY}/cartflow-services@sha256:{'a' * 64}"
SPARK = f"{REGISTRY}/cartflow-spark@sha256:{'b' * 64}"
STACK = "cartflow-it"


def _request(emulator: str, **kw: Any) -> DeployRequest:
    return DeployRequest(
        stack=STACK, region=REGION, endpoint_url=emulator, image_uris={"services": SERVICES, "spark": SPARK}, **kw
    )


@pytest.fixture(scope="module")
def clients(settings: Settings) -> AwsClients:
    return AwsClients(settings.model_copy(update={"region": REGION}))


def _resource_changes(cs: Any) -> dict[str, str]:
    return {c["ResourceChange"]["LogicalResourceId"]: c["ResourceChange"]["Action"] for c in cs.changes}


def test_dry_run_prints_the_change_set_and_leaves_nothing(emulator: str, clients: AwsClients) -> None:
    cs = deploy(_request(emulator, dry_run=True))
    template = build_template(Settings())
    unconditional = {k for k, r in template["Resources"].items() if "Condition" not in r}
    changes = _resource_changes(cs)
    assert unconditional <= set(changes)
    assert set(changes.values()) == {"Add"}
    assert cs.parameters["BucketName"] == f"cartflow-data-000000000000-{REGION}"  # <spec bucket>-<account>-<region>
    # Nothing was created: no stack, no table.
    stacks = clients.client("cloudformation").list_stacks()["StackSummaries"]
    assert all(s["StackStatus"] == "DELETE_COMPLETE" for s in stacks if s["StackName"] == STACK)
    assert clients.dynamodb.list_tables()["TableNames"] == []


def test_the_template_goes_through_the_artifact_bucket(emulator: str, clients: AwsClients) -> None:
    """Over the 51,200-byte inline limit: CloudFormation reads it from the artifact bucket."""
    from cartflow.infra.cloudformation import MAX_TEMPLATE_BODY_BYTES, template_body

    body = template_body(build_template(Settings()))
    assert len(body.encode()) > MAX_TEMPLATE_BODY_BYTES
    cs = deploy(_request(emulator, dry_run=True, artifact_bucket="it-artifacts"))
    keys = [o["Key"] for o in clients.s3.list_objects_v2(Bucket="it-artifacts")["Contents"]]
    assert keys and all(k.startswith(f"templates/{STACK}/") for k in keys)
    assert cs.change_set_type == "CREATE"


def test_cli_dry_run(emulator: str) -> None:
    from cartflow.cli import app

    result = CliRunner().invoke(
        app,
        [
            "deploy",
            "--stack",
            "cli-dry",
            "--region",
            REGION,
            "--dry-run",
            "--endpoint-url",
            emulator,
            "--image-uri",
            f"services={SERVICES}",
            "--image-uri",
            f"spark={SPARK}",
            "--bucket",
            "cli-dry-bucket",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output and "StateMachine" in result.output


def test_cli_rejects_an_image_without_digest(emulator: str) -> None:
    from cartflow.cli import app

    result = CliRunner().invoke(
        app,
        [
            "deploy",
            "--stack",
            "x",
            "--region",
            REGION,
            "--dry-run",
            "--endpoint-url",
            emulator,
            "--image-uri",
            f"services={REGISTRY}/cartflow-services:latest",
            "--image-uri",
            f"spark={SPARK}",
        ],
    )
    assert result.exit_code == 1
    assert "is not pinned by digest" in " ".join(result.output.split())


@pytest.fixture(scope="module")
def deployed(emulator: str) -> dict[str, str]:
    cs = deploy(_request(emulator, bucket="cartflow-it-data"))
    return cs.parameters


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    s = Settings()
    return render(load_spec(), {**s.spec_values(), "bucket": "cartflow-it-data", "region": REGION})


def _table_shape(desc: dict[str, Any]) -> dict[str, Any]:
    return {
        "keys": desc["KeySchema"],
        "attributes": sorted((a["AttributeName"], a["AttributeType"]) for a in desc["AttributeDefinitions"]),
        "indexes": sorted(
            (i["IndexName"], json.dumps(i["KeySchema"]), i["Projection"]["ProjectionType"])
            for i in desc.get("GlobalSecondaryIndexes", [])
        ),
        "stream": desc.get("StreamSpecification", {}).get("StreamViewType"),
        "billing": desc.get("BillingModeSummary", {}).get("BillingMode", "PAY_PER_REQUEST"),
    }


def _spec_table_shape(t: dict[str, Any]) -> dict[str, Any]:
    keys = [{"AttributeName": t["key"]["hash"], "KeyType": "HASH"}]
    if "range" in t["key"]:
        keys.append({"AttributeName": t["key"]["range"], "KeyType": "RANGE"})
    return {
        "keys": keys,
        "attributes": sorted(t["attributes"].items()),
        "indexes": sorted(
            (
                i["name"],
                json.dumps([{"AttributeName": i["hash"], "KeyType": "HASH"}, {"AttributeName": i["range"], "KeyType": "RANGE"}]),
                "ALL",
            )
            for i in t.get("indexes", [])
        ),
        "stream": t.get("stream"),
        "billing": "PAY_PER_REQUEST",
    }


def test_tables_match_the_spec(deployed: dict[str, str], clients: AwsClients, spec: dict[str, Any]) -> None:
    for t in spec["tables"]:
        desc = clients.dynamodb.describe_table(TableName=t["name"])["Table"]
        assert _table_shape(desc) == _spec_table_shape(t), t["name"]


def test_queues_bucket_topics_match_the_spec(deployed: dict[str, str], clients: AwsClients, spec: dict[str, Any]) -> None:
    sqs = clients.sqs
    for q in spec["queues"]:
        url = sqs.get_queue_url(QueueName=q["name"])["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        if "visibility_timeout_seconds" in q:
            assert int(attrs["VisibilityTimeout"]) == q["visibility_timeout_seconds"]
        if "message_retention_seconds" in q:
            assert int(attrs["MessageRetentionPeriod"]) == q["message_retention_seconds"]
        if "dead_letter_queue" in q:
            redrive = json.loads(attrs["RedrivePolicy"])
            assert redrive["deadLetterTargetArn"].endswith(f":{q['dead_letter_queue']}")
            assert int(redrive["maxReceiveCount"]) == q["max_receive_count"]
        if "allow_s3_bucket" in q:
            (stmt,) = json.loads(attrs["Policy"])["Statement"]
            assert stmt["Condition"]["ArnEquals"]["aws:SourceArn"] == f"arn:aws:s3:::{q['allow_s3_bucket']}"

    config = clients.s3.get_bucket_notification_configuration(Bucket=spec["bucket"]["name"])
    got = [
        (c["QueueArn"].rsplit(":", 1)[1], c["Events"], c["Filter"]["Key"]["FilterRules"]) for c in config["QueueConfigurations"]
    ]
    # The template writes one queue configuration per event (CloudFormation's shape).
    expected = [
        (n["queue"], [event], [{"Name": "prefix", "Value": n["prefix"]}])
        for n in spec["bucket"]["notifications"]
        for event in n["events"]
    ]
    assert got == expected
    topics = {t["TopicArn"].rsplit(":", 1)[1] for t in clients.sns.list_topics()["Topics"]}
    assert set(spec["topics"]) <= topics


def test_functions_event_sources_and_schedules(deployed: dict[str, str], clients: AwsClients) -> None:
    lam = clients.client("lambda")
    for f in FUNCTIONS:
        conf = lam.get_function(FunctionName=f"cartflow-{f.principal}")["Configuration"]
        assert conf["PackageType"] == "Image"
        assert conf["ImageConfigResponse"]["ImageConfig"]["Command"] == [f.handler]
        env = conf["Environment"]["Variables"]
        assert set(env) == {env_name(n) for n in FUNCTION_SETTINGS}
        assert env["CARTFLOW_BUCKET"] == "cartflow-it-data" and env["CARTFLOW_REGION"] == REGION
    mappings = lam.list_event_source_mappings()["EventSourceMappings"]
    by_function = {m["FunctionArn"].rsplit(":", 1)[1]: m for m in mappings}
    assert by_function["cartflow-ingest"]["EventSourceArn"].endswith(":cartflow-ingest")
    assert ":table/cartflow-batch-chunks/stream/" in by_function["cartflow-stream-trigger"]["EventSourceArn"]
    assert all(m["FunctionResponseTypes"] == ["ReportBatchItemFailures"] for m in by_function.values())
    schedules = clients.client("scheduler").list_schedules()["Schedules"]
    assert {s["Target"]["Arn"].rsplit(":", 1)[1] for s in schedules} == {"cartflow-debouncer", "cartflow-controller"}


def test_spark_task_definition_and_state_machine(deployed: dict[str, str], clients: AwsClients, spec: dict[str, Any]) -> None:
    s = Settings()
    td = clients.client("ecs").describe_task_definition(taskDefinition=s.ecs_task_definition)["taskDefinition"]
    (container,) = td["containerDefinitions"]
    assert container["image"] == SPARK
    assert {e["name"] for e in container["environment"]} == {env_name(n) for n in JOB_SETTINGS}
    assert td["requiresCompatibilities"] == ["FARGATE"] and td["networkMode"] == "awsvpc"

    sfn = clients.sfn
    (machine,) = [m for m in sfn.list_state_machines()["stateMachines"] if m["name"] == spec["state_machine"]["name"]]
    definition = json.loads(sfn.describe_state_machine(stateMachineArn=machine["stateMachineArn"])["definition"])
    run = definition["States"]["Validate"]["Branches"][0]["States"]["ValidateRunTask"]["Parameters"]
    network = run["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["Subnets"] == deployed["SubnetIds"].split(",")
    topic = next(t["TopicArn"] for t in clients.sns.list_topics()["Topics"] if t["TopicArn"].endswith(f":{s.success_topic}"))
    expected = build_definition(
        "aws",
        {
            "bucket": "cartflow-it-data",
            "batch_chunks_table": s.batch_chunks_table,
            "success_topic_arn": topic,
            "failure_topic_arn": topic.replace(s.success_topic, s.failure_topic),
            **AWS_RETRY_DEFAULTS,
            "ecs_cluster": s.ecs_cluster,
            "ecs_task_definition": s.ecs_task_definition,
            "ecs_container_name": s.ecs_container_name,
            "job_results_table": s.job_results_table,
            "subnets": network["Subnets"],
            "security_groups": network["SecurityGroups"],
            "ecs_assign_public_ip": "ENABLED",
        },
    )
    assert definition == without_comments(expected)  # the template leaves the Comments out


def test_tables_equal_what_resources_apply_creates(deployed: dict[str, str], settings: Settings, clients: AwsClients) -> None:
    """The template and the local applier, fed the same spec, make the same tables (other names)."""
    renamed = settings.model_copy(
        update={
            "region": REGION,
            **{k: f"applied-{getattr(settings, k)}".lower() for k in ("bucket", *RESOURCE_NAME_FIELDS)},
        }
    )
    apply_resources(renamed, AwsClients(renamed))
    ddb = clients.dynamodb
    for field in ("events_table", "batch_chunks_table", "idempotency_table", "category_kpis_table", "order_kpis_table"):
        from_template = ddb.describe_table(TableName=getattr(Settings(), field))["Table"]
        from_apply = ddb.describe_table(TableName=getattr(renamed, field))["Table"]
        assert _table_shape(from_template) == _table_shape(from_apply), field


def test_a_new_image_digest_updates_functions_in_place(deployed: dict[str, str], emulator: str) -> None:
    new = SERVICES.replace("a" * 64, "c" * 64)
    cs = deploy(
        DeployRequest(
            stack=STACK,
            region=REGION,
            endpoint_url=emulator,
            dry_run=True,
            bucket="cartflow-it-data",
            image_uris={"services": new, "spark": SPARK},
        )
    )
    assert cs.change_set_type == "UPDATE"
    changes = _resource_changes(cs)
    assert {f"{f.logical}Function" for f in FUNCTIONS} <= {k for k, a in changes.items() if a == "Modify"}
    assert cs.parameters["ServicesImageUri"] == new
