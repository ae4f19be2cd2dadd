"""cartflow/infra/cloudformation.py: the CloudFormation template is lint-clean and is the resource spec."""

from __future__ import annotations

import importlib
import inspect
import json
from typing import Any

import pytest

from cartflow.core.config import Settings
from cartflow.core.spec import load_spec, render
from cartflow.infra import cloudformation as tpl
from cartflow.infra import iam
from cartflow.infra.cloudformation import (
    FUNCTIONS,
    LOG_DELIVERY_ACTIONS,
    MAX_TEMPLATE_BYTES,
    TemplateOptions,
    build_template,
    template_body,
)
from cartflow.infra.intrinsics import GetAtt, Ref, Sub, check_names, sub, to_json
from orchestrator.render import AWS_RETRY_DEFAULTS, build_definition, without_comments
from tests.cfn_resolve import ACCOUNT, REGION, resolve, sample_values

SETTINGS = Settings()
SUBNETS = ["subnet-aaa", "subnet-bbb"]
BUCKET = "my-cartflow-data"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return build_template(SETTINGS)


@pytest.fixture(scope="module")
def values(template: dict[str, Any]) -> dict[str, Any]:
    return sample_values(template, {"SubnetIds": SUBNETS, "BucketName": BUCKET})


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """The spec rendered with the values the sample deployment resolves to."""
    return render(load_spec(), {**SETTINGS.spec_values(), "bucket": BUCKET, "region": REGION, "account_id": ACCOUNT})


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


# ----------------------------------------------------------------------------- lint, size


def test_cfn_lint_finds_nothing(template: dict[str, Any]) -> None:
    from cfnlint.api import lint

    matches = lint(json.dumps(template, indent=1), regions=["us-east-1", "eu-west-1"])
    assert [f"{m.rule.id} {m.message} (line {m.linenumber})" for m in matches] == []


def test_template_fits_the_s3_template_limit(template: dict[str, Any]) -> None:
    # `cartflow deploy` uploads it (cartflow/infra/artifacts.py): 1 MB, not the 51,200 B inline limit.
    assert len(template_body(template).encode()) < MAX_TEMPLATE_BYTES * 0.5
    with pytest.raises(ValueError, match="takes 1000000 from S3"):
        template_body({**template, "Metadata": {"padding": "x" * MAX_TEMPLATE_BYTES}})


def test_no_unresolved_tokens(template: dict[str, Any]) -> None:
    assert "@@" not in json.dumps(template)


def test_deploy_template_command_prints_the_template(template: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from cartflow.cli import app

    result = CliRunner().invoke(app, ["deploy-template"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == template


# ----------------------------------------------------------------------------- storage vs spec


def test_tables_are_the_spec_tables(template: dict[str, Any], spec: dict[str, Any]) -> None:
    tables = {r["Properties"]["TableName"]: r["Properties"] for r in of_type(template, "AWS::DynamoDB::Table").values()}
    assert set(tables) == {t["name"] for t in spec["tables"]}
    for t in spec["tables"]:
        props = tables[t["name"]]
        assert props["BillingMode"] == "PAY_PER_REQUEST"
        assert {a["AttributeName"]: a["AttributeType"] for a in props["AttributeDefinitions"]} == t["attributes"]
        keys = {k["KeyType"]: k["AttributeName"] for k in props["KeySchema"]}
        assert keys == {"HASH": t["key"]["hash"], **({"RANGE": t["key"]["range"]} if "range" in t["key"] else {})}
        indexes = {i["IndexName"]: i for i in props.get("GlobalSecondaryIndexes", [])}
        assert set(indexes) == {i["name"] for i in t.get("indexes", [])}
        for i in t.get("indexes", []):
            assert {k["KeyType"]: k["AttributeName"] for k in indexes[i["name"]]["KeySchema"]} == {
                "HASH": i["hash"],
                "RANGE": i["range"],
            }
            assert indexes[i["name"]]["Projection"] == {"ProjectionType": "ALL"}
        assert props.get("StreamSpecification") == ({"StreamViewType": t["stream"]} if t.get("stream") else None)
        assert props.get("TimeToLiveSpecification") == ({"AttributeName": t["ttl"], "Enabled": True} if t.get("ttl") else None)
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}


def test_queues_bucket_and_notification_are_the_spec(
    template: dict[str, Any], values: dict[str, Any], spec: dict[str, Any]
) -> None:
    queues = {
        r["Properties"]["QueueName"]: resolve(r["Properties"], values) for r in of_type(template, "AWS::SQS::Queue").values()
    }
    # The spec's, plus the stream mapping's on-failure queue, which only the AWS stack has.
    assert set(queues) == {q["name"] for q in spec["queues"]} | {"cartflow-stream-trigger-failures"}
    for q in spec["queues"]:
        props = queues[q["name"]]
        assert props.get("VisibilityTimeout") == q.get("visibility_timeout_seconds")
        assert props.get("MessageRetentionPeriod") == q.get("message_retention_seconds")
        if "dead_letter_queue" in q:
            assert props["RedrivePolicy"] == {
                "deadLetterTargetArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{q['dead_letter_queue']}",
                "maxReceiveCount": q["max_receive_count"],
            }

    bucket = template["Resources"]["DataBucket"]
    props = resolve(bucket["Properties"], values)
    assert props["BucketName"] == spec["bucket"]["name"] == BUCKET
    expected = [
        {
            "Event": event,
            "Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{n['queue']}",
            "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": n["prefix"]}]}},
        }
        for n in spec["bucket"]["notifications"]
        for event in n["events"]
    ]
    assert props["NotificationConfiguration"] == {"QueueConfigurations": expected}
    assert props["PublicAccessBlockConfiguration"] == dict.fromkeys(
        ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"), True
    )
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"


def test_queue_policy_admits_only_the_bucket_and_precedes_it(
    template: dict[str, Any], values: dict[str, Any], spec: dict[str, Any]
) -> None:
    policies = of_type(template, "AWS::SQS::QueuePolicy")
    assert template["Resources"]["DataBucket"]["DependsOn"] == sorted(policies)
    (policy,) = policies.values()
    (stmt,) = resolve(policy["Properties"]["PolicyDocument"], values)["Statement"]
    (guarded,) = [q for q in spec["queues"] if "allow_s3_bucket" in q]
    assert stmt["Resource"] == f"arn:aws:sqs:{REGION}:{ACCOUNT}:{guarded['name']}"
    assert stmt["Condition"]["ArnEquals"] == {"aws:SourceArn": f"arn:aws:s3:::{guarded['allow_s3_bucket']}"}
    # No cycle: the policy names the bucket by parameter, never the bucket resource.
    assert '"DataBucket"' not in json.dumps(policy)


def test_topics_and_optional_email_subscriptions(template: dict[str, Any], spec: dict[str, Any]) -> None:
    topics = {r["Properties"]["TopicName"] for r in of_type(template, "AWS::SNS::Topic").values()}
    assert topics == set(spec["topics"])
    subs = of_type(template, "AWS::SNS::Subscription")
    assert {s["Condition"] for s in subs.values()} == {"HasFailureEmail", "HasSuccessEmail"}
    assert all(template["Parameters"][s["Properties"]["Endpoint"]["Ref"]]["Default"] == "" for s in subs.values())


# ----------------------------------------------------------------------------- functions


def test_one_image_function_per_handler(template: dict[str, Any]) -> None:
    functions = of_type(template, "AWS::Lambda::Function")
    assert len(functions) == len(FUNCTIONS) == 4
    for f in FUNCTIONS:
        props = functions[f"{f.logical}Function"]["Properties"]
        assert props["PackageType"] == "Image"
        assert props["Code"] == {"ImageUri": {"Ref": "ServicesImageUri"}}
        assert props["ImageConfig"] == {"EntryPoint": ["/lambda-entrypoint.sh"], "Command": [f.handler]}
        module_name, _, attr = f.handler.rpartition(".")
        handler = getattr(importlib.import_module(module_name), attr)
        assert list(inspect.signature(handler).parameters) == ["event", "context"]
        assert props["LoggingConfig"]["LogGroup"] == {"Ref": f"{f.logical}LogGroup"}
        group = template["Resources"][f"{f.logical}LogGroup"]["Properties"]
        assert group["LogGroupName"] == f"/aws/lambda/{props['FunctionName']}"
        assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}


def test_event_sources_report_partial_batch_failures(
    template: dict[str, Any], spec: dict[str, Any], values: dict[str, Any]
) -> None:
    mappings = {
        r["Properties"]["FunctionName"]["Ref"]: resolve(r["Properties"], values)
        for r in of_type(template, "AWS::Lambda::EventSourceMapping").values()
    }
    assert set(mappings) == {"IngestFunction", "StreamTriggerFunction"}
    (notification,) = spec["bucket"]["notifications"]
    assert mappings["IngestFunction"]["EventSourceArn"] == f"arn:aws:sqs:{REGION}:{ACCOUNT}:{notification['queue']}"
    (streamed,) = [t["name"] for t in spec["tables"] if t.get("stream")]
    assert mappings["StreamTriggerFunction"]["EventSourceArn"].startswith(
        f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{streamed}/stream/"
    )
    assert all(m["FunctionResponseTypes"] == ["ReportBatchItemFailures"] for m in mappings.values())
    # The stream mapping keeps what it gives up on, in a queue only the stream trigger's role may send to.
    failures = values["StreamTriggerFailures.Arn"]
    assert mappings["StreamTriggerFunction"]["DestinationConfig"] == {"OnFailure": {"Destination": failures}}
    send = _role_policy(template, values, "StreamTriggerRole")["Statement"][-1]
    assert (send["Action"], send["Resource"]) == (["sqs:SendMessage"], [failures])
    queue_props = template["Resources"]["StreamTriggerFailures"]["Properties"]
    assert queue_props["SqsManagedSseEnabled"] is True
    # Lambda requires the queue's visibility timeout to cover the function's timeout.
    (queue,) = [q for q in spec["queues"] if q["name"] == notification["queue"]]
    ingest = template["Resources"]["IngestFunction"]["Properties"]
    assert queue["visibility_timeout_seconds"] >= ingest["Timeout"]


def test_scheduler_ticks_debouncer_and_controller_only(template: dict[str, Any], values: dict[str, Any]) -> None:
    schedules = {k: resolve(r["Properties"], values) for k, r in of_type(template, "AWS::Scheduler::Schedule").items()}
    assert set(schedules) == {"DebouncerSchedule", "ControllerSchedule"}
    targets = {s["Target"]["Arn"] for s in schedules.values()}
    assert targets == {values["DebouncerFunction.Arn"], values["ControllerFunction.Arn"]}
    assert all(
        s["ScheduleExpression"] == "rate(1 minute)" and s["FlexibleTimeWindow"] == {"Mode": "OFF"} for s in schedules.values()
    )
    role = resolve(template["Resources"]["SchedulerRole"]["Properties"], values)
    (stmt,) = role["Policies"][0]["PolicyDocument"]["Statement"]
    assert stmt["Action"] == ["lambda:InvokeFunction"] and set(stmt["Resource"]) == targets


# ----------------------------------------------------------------------------- IAM


def _role_policy(template: dict[str, Any], values: dict[str, Any], role: str) -> dict[str, Any]:
    (policy,) = resolve(template["Resources"][role]["Properties"]["Policies"], values)
    return policy["PolicyDocument"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("role", "principal"),
    [(f"{f.logical}Role", f.principal) for f in FUNCTIONS]
    + [("StateMachineRole", "state-machine"), ("SparkJobTaskRole", "spark-job")],
)
def test_roles_carry_the_iam_module_policies(template: dict[str, Any], values: dict[str, Any], role: str, principal: str) -> None:
    """One least-privilege source: cartflow/infra/iam.py, rendered with the deployed names."""
    iam_values = {
        **SETTINGS.spec_values(),
        "region": REGION,
        "account_id": ACCOUNT,
        "bucket": BUCKET,
        "state_machine_target": "aws",
        "ecs_task_role": values["SparkJobTaskRole"],
        "ecs_execution_role": values["SparkJobExecutionRole"],
    }
    expected = iam.policies(iam_values)[principal]
    actual = _role_policy(template, values, role)
    if principal == "stream-trigger":
        # Its event source mapping's on-failure destination (a queue only the IaC names).
        assert actual["Statement"].pop()["Sid"] == "OnFailureDestination"
    if principal == "state-machine":
        # Execution logging: the delivery actions AWS requires on "*".
        logs = actual["Statement"].pop()
        assert (logs["Sid"], logs["Action"], logs["Resource"]) == ("DeliverExecutionLogs", LOG_DELIVERY_ACTIONS, "*")
    if role.endswith("Role") and principal not in ("state-machine", "spark-job"):
        # Lambda roles add writing to their own log group (names the IaC owns).
        logs = actual["Statement"].pop()
        assert logs["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
        assert logs["Resource"] == [values[role.replace("Role", "LogGroup.Arn")]]
    assert actual == expected


def test_star_resources_only_where_aws_requires_them(template: dict[str, Any], values: dict[str, Any]) -> None:
    allowed = {"dynamodb:ListStreams", "ecr:GetAuthorizationToken", *LOG_DELIVERY_ACTIONS}
    for logical, res in of_type(template, "AWS::IAM::Role").items():
        for policy in resolve(res["Properties"]["Policies"], values):
            for stmt in policy["PolicyDocument"]["Statement"]:
                if stmt["Resource"] == "*" or "*" in stmt["Resource"]:
                    assert set(stmt["Action"]) <= allowed, (logical, stmt)
                assert not any(a.endswith("*") for a in stmt["Action"]), (logical, stmt)


def test_execution_role_pulls_only_the_spark_repository(template: dict[str, Any], values: dict[str, Any]) -> None:
    doc = _role_policy(template, values, "SparkJobExecutionRole")
    pull = next(s for s in doc["Statement"] if s["Sid"] == "PullSparkImage")
    assert pull["Resource"] == [f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/cartflow-spark"]
    other = build_template(SETTINGS, TemplateOptions(spark_repository=None))
    assert "ecr:" not in json.dumps(other["Resources"]["SparkJobExecutionRole"])


def test_trust_policies_name_one_service_each(template: dict[str, Any]) -> None:
    services = {
        k: r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"]
        for k, r in of_type(template, "AWS::IAM::Role").items()
    }
    assert services == {
        **{f"{f.logical}Role": "lambda.amazonaws.com" for f in FUNCTIONS},
        "SchedulerRole": "scheduler.amazonaws.com",
        "StateMachineRole": "states.amazonaws.com",
        "SparkJobTaskRole": "ecs-tasks.amazonaws.com",
        "SparkJobExecutionRole": "ecs-tasks.amazonaws.com",
    }


# ----------------------------------------------------------------------------- ECS + state machine


def test_fargate_task_definition(template: dict[str, Any]) -> None:
    td = template["Resources"]["SparkJobTaskDefinition"]["Properties"]
    assert td["Family"] == SETTINGS.ecs_task_definition
    assert (td["RequiresCompatibilities"], td["NetworkMode"]) == (["FARGATE"], "awsvpc")
    assert (td["Cpu"], td["Memory"]) == ({"Ref": "SparkJobCpu"}, {"Ref": "SparkJobMemory"})
    (container,) = td["ContainerDefinitions"]
    assert container["Name"] == SETTINGS.ecs_container_name
    assert container["Image"] == {"Ref": "SparkImageUri"}
    assert "EntryPoint" not in container and "Command" not in container  # the image's, + the state machine's override
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    assert container["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": "SparkJobLogGroup"}
    cluster = template["Resources"]["SparkCluster"]["Properties"]
    assert cluster["ClusterName"] == SETTINGS.ecs_cluster
    sg = template["Resources"]["SparkJobSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in sg


def deployed_definition(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    props = template["Resources"]["StateMachine"]["Properties"]
    return json.loads(resolve(props["DefinitionString"], values))  # type: ignore[no-any-return]


def test_state_machine_is_the_aws_rendering(template: dict[str, Any], values: dict[str, Any], spec: dict[str, Any]) -> None:
    """After CloudFormation's Fn::Sub, the definition is exactly render.py's aws target."""
    expected = build_definition(
        "aws",
        {
            "bucket": BUCKET,
            "batch_chunks_table": SETTINGS.batch_chunks_table,
            "success_topic_arn": values["SuccessTopic"],
            "failure_topic_arn": values["FailureTopic"],
            **AWS_RETRY_DEFAULTS,
            "ecs_cluster": SETTINGS.ecs_cluster,
            "ecs_task_definition": SETTINGS.ecs_task_definition,
            "ecs_container_name": SETTINGS.ecs_container_name,
            "job_results_table": SETTINGS.job_results_table,
            "subnets": SUBNETS,
            "security_groups": [values["SparkJobSecurityGroup.GroupId"]],
            "ecs_assign_public_ip": "ENABLED",
        },
    )
    # ... without the Comments, which document the template in the repository only.
    assert deployed_definition(template, values) == without_comments(expected)
    assert "Comment" in json.dumps(expected) and '"Comment"' not in json.dumps(deployed_definition(template, values))
    props = template["Resources"]["StateMachine"]["Properties"]
    assert props["StateMachineName"] == spec["state_machine"]["name"]
    assert props["RoleArn"] == {"Fn::GetAtt": ["StateMachineRole", "Arn"]}


def test_state_machine_logs_its_failed_states(template: dict[str, Any], values: dict[str, Any], spec: dict[str, Any]) -> None:
    props = resolve(template["Resources"]["StateMachine"]["Properties"], values)
    group = template["Resources"]["StateMachineLogGroup"]["Properties"]
    assert group["LogGroupName"] == f"/aws/vendedlogs/states/{spec['state_machine']['name']}"
    assert props["LoggingConfiguration"] == {
        "Level": "ERROR",
        "IncludeExecutionData": True,
        "Destinations": [{"CloudWatchLogsLogGroup": {"LogGroupArn": values["StateMachineLogGroup.Arn"]}}],
    }


# ----------------------------------------------------------------------------- alarms


def test_alarms_cover_failed_executions_function_errors_and_dead_letters(template: dict[str, Any]) -> None:
    alarms = of_type(template, "AWS::CloudWatch::Alarm")
    watched = {
        (a["Properties"]["Namespace"], a["Properties"]["MetricName"], json.dumps(a["Properties"]["Dimensions"][0]["Value"]))
        for a in alarms.values()
    }
    machine = json.dumps({"Ref": "StateMachine"})
    assert ("AWS/States", "ExecutionsFailed", machine) in watched
    assert ("AWS/States", "ExecutionsTimedOut", machine) in watched
    for f in FUNCTIONS:
        assert ("AWS/Lambda", "Errors", json.dumps({"Ref": f"{f.logical}Function"})) in watched
    for queue in ("IngestQueueDlq", "StreamTriggerFailures"):
        assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible", json.dumps({"Fn::GetAtt": [queue, "QueueName"]})) in watched
    assert len(alarms) == len(watched) == 2 + len(FUNCTIONS) + 2
    for name, a in alarms.items():
        props = a["Properties"]
        # The first failure alarms, to the topic of the failed-batch notices; quiet hours are fine.
        assert props["AlarmActions"] == [{"Ref": "FailureTopic"}], name
        assert (props["Threshold"], props["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold"), name
        assert (props["EvaluationPeriods"], props["TreatMissingData"]) == (1, "notBreaching"), name
        assert props["Statistic"] == ("Maximum" if props["Namespace"] == "AWS/SQS" else "Sum"), name


def test_private_subnets_render_without_public_ip(values: dict[str, Any]) -> None:
    private = build_template(SETTINGS, TemplateOptions(assign_public_ip=False))
    run = deployed_definition(private, values)["States"]["Validate"]["Branches"][0]["States"]["ValidateRunTask"]
    assert run["Parameters"]["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"


def test_names_follow_settings() -> None:
    renamed = Settings(events_table="ev2", state_machine="sm2", ecs_cluster="c2")
    t = build_template(renamed)
    names = {r["Properties"].get("TableName") for r in of_type(t, "AWS::DynamoDB::Table").values()}
    assert "ev2" in names
    assert t["Resources"]["StateMachine"]["Properties"]["StateMachineName"] == "sm2"
    assert t["Resources"]["SparkCluster"]["Properties"]["ClusterName"] == "c2"


def test_deploy_time_text_turns_into_intrinsics() -> None:
    assert to_json(sub(str(tpl.BUCKET))) == {"Ref": "BucketName"}
    assert to_json(sub(str(tpl.REGION))) == {"Ref": "AWS::Region"}
    assert to_json(sub(str(GetAtt("Role", "Arn")))) == {"Fn::GetAtt": ["Role", "Arn"]}
    assert to_json(sub(f"arn:aws:s3:::{tpl.BUCKET}/*")) == {"Fn::Sub": "arn:aws:s3:::${BucketName}/*"}
    with pytest.raises(ValueError):
        check_names({}, {"X": {}}, sub("${Literal}" + str(Ref("X"))))


def test_intrinsics_refuse_what_cloudformation_would_misread() -> None:
    with pytest.raises(ValueError, match="outside Fn::Sub"):
        to_json({"Resource": f"arn:aws:s3:::{tpl.BUCKET}"})  # a sub() forgotten
    with pytest.raises(ValueError, match="literal"):
        Sub("${aws:username}")  # an IAM policy variable must be written ${!aws:username}
    assert to_json(Sub("${!aws:username}")) == {"Fn::Sub": "${!aws:username}"}
    with pytest.raises(ValueError, match="Nowhere"):
        check_names({"P": {}}, {"R": {}}, [Ref("P"), GetAtt("R", "Arn"), Sub("${AWS::Region}${R.Arn}${Nowhere}")])


def test_the_documented_deployer_policy_is_valid_json() -> None:
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs/deploy.md").read_text()
    (block,) = re.findall(r"```json\n(.*?)```", doc, re.S)
    policy = json.loads(block)
    assert policy["Version"] == iam.VERSION
    passes = [s for s in policy["Statement"] if s["Action"] == "iam:PassRole"]
    assert passes and all("Condition" in s for s in passes)
