"""The AWS deployment as one CloudFormation template, generated from the resource spec.

``build_template(settings)`` returns the template as a dict (``cartflow deploy-template``
prints it; ``cartflow deploy`` ships it). Nothing here is a second source of truth:

* bucket, queues, tables (keys, indexes, stream, TTL), topics and the state machine name come
  from ``cartflow/core/spec.yaml`` rendered with the same values as the local stack;
* every role's permissions come from ``cartflow.infra.iam.policies`` (the one
  least-privilege source), plus the log-group statements only the IaC can name;
* the state machine is ``orchestrator/render.py``'s ``aws`` rendering (``ecs:runTask.sync``);
* the functions' and the job's environment is ``cartflow.infra.environment``'s lists.

What exists only on AWS is added here: Lambda functions (container images of the services
image, one per handler), their event sources (SQS, DynamoDB Streams, EventBridge Scheduler),
the ECS cluster and Fargate task definition, log groups, an egress-only security group.

Names inside ARNs that CloudFormation only knows at deploy time (region, account, the bucket
parameter, generated role names) are written as ``@@Name@@`` tokens while the policies and the
definition are built (the spec renderer, iam.py and render.py all format with braces and
reject them in values), then ``_finalise`` turns every string holding a token into ``Ref`` /
``Fn::GetAtt`` / ``Fn::Sub``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cartflow.core.config import Settings
from cartflow.core.spec import load_spec, render
from cartflow.infra import iam
from cartflow.infra.environment import FUNCTION_SETTINGS, JOB_SETTINGS, environment
from orchestrator.render import AWS_RETRY_DEFAULTS, build_definition

Template = dict[str, Any]

# CloudFormation accepts a template body of at most 51,200 bytes in the API call itself
# (larger ones must be uploaded to S3 first, and the bucket is part of this stack).
MAX_TEMPLATE_BODY_BYTES = 51_200

_TOKEN = re.compile(r"@@([A-Za-z0-9:.]+)@@")


def cfn(name: str) -> str:
    """A deploy-time value inside a string: a parameter, pseudo parameter, resource or Resource.Attr."""
    return f"@@{name}@@"


REGION, ACCOUNT, BUCKET = cfn("AWS::Region"), cfn("AWS::AccountId"), cfn("BucketName")


@dataclass(frozen=True)
class Function:
    """One Lambda function: a services module with ``handler(event, context)``."""

    module: str  # services/<module>.py
    principal: str  # its policy in cartflow.infra.iam
    timeout_seconds: int = 60
    memory_mb: int = 512

    @property
    def logical(self) -> str:
        return "".join(w.capitalize() for w in self.module.split("_"))

    @property
    def handler(self) -> str:
        return f"services.{self.module}.handler"


FUNCTIONS: tuple[Function, ...] = (
    Function("ingest", "ingest"),
    Function("debouncer", "debouncer"),
    Function("stream_trigger", "stream-trigger"),
    Function("controller", "controller"),
)
SCHEDULED = ("debouncer", "controller")  # EventBridge Scheduler ticks these (modules)
# The services image's ENTRYPOINT is the `cartflow` CLI; Lambda runs the Runtime API loop instead.
LAMBDA_ENTRYPOINT = ["python", "-m", "services.lambda_runtime"]
# Retention values CloudWatch Logs accepts.
LOG_RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653]
FARGATE_CPU = ["1024", "2048", "4096", "8192", "16384"]


@dataclass(frozen=True)
class TemplateOptions:
    """Generation-time choices (everything a user may change per stack is a template parameter)."""

    name_prefix: str = "cartflow"  # functions, schedules, log groups
    architecture: Literal["x86_64", "arm64"] = "x86_64"  # of the pushed images
    # ENABLED for public subnets without a NAT gateway (e.g. the default VPC): the task needs
    # a route to ECR, S3, DynamoDB and CloudWatch Logs.
    assign_public_ip: bool = True
    # EventBridge Scheduler's finest rate is one minute (locally the runners tick every few s).
    schedule_expression: str = "rate(1 minute)"
    # ECR repository of the Spark image (the execution role may pull only from it); None when
    # the image lives in another registry.
    spark_repository: str | None = "cartflow-spark"


# --------------------------------------------------------------------------- helpers


def _logical_id(raw_name: str) -> str:
    """Spec name -> logical id: ``{events_table}`` -> EventsTable, ``{ingest_queue}-dlq`` -> IngestQueueDlq."""
    return "".join(w[:1].upper() + w[1:] for w in re.findall(r"[A-Za-z0-9]+", raw_name))


def _ref(name: str) -> dict[str, Any]:
    return {"Ref": name}


def _arn_of(logical: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical, "Arn"]}


def _finalise(node: Any) -> Any:
    """Tokens -> intrinsic functions (a whole-string token becomes Ref/GetAtt, else Fn::Sub)."""
    if isinstance(node, dict):
        return {k: _finalise(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_finalise(v) for v in node]
    if isinstance(node, str) and _TOKEN.search(node):
        if "${" in node:
            raise ValueError(f"literal '${{' next to a deploy-time value: {node!r}")
        whole = _TOKEN.fullmatch(node)
        if whole:
            name = whole.group(1)
            if "." in name and not name.startswith("AWS::"):
                return {"Fn::GetAtt": name.split(".", 1)}
            return _ref(name)
        return {"Fn::Sub": _TOKEN.sub(r"${\1}", node)}
    return node


def _document(statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Version": iam.VERSION, "Statement": statements}


def _role(service: str, policies: Mapping[str, Mapping[str, Any]], *, source_account: bool = True) -> dict[str, Any]:
    trust: dict[str, Any] = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    if source_account:  # confused-deputy guard where the service sets aws:SourceAccount
        trust["Condition"] = {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": _document([trust]),
            "Policies": [{"PolicyName": name, "PolicyDocument": doc} for name, doc in policies.items()],
        },
    }


def _write_logs(log_group: str) -> dict[str, Any]:
    # The log group exists (this template creates it), so no logs:CreateLogGroup.
    return {
        "Sid": "WriteOwnLogs",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": [cfn(f"{log_group}.Arn")],
    }


def _log_group(name: str) -> dict[str, Any]:
    return {
        "Type": "AWS::Logs::LogGroup",
        "DeletionPolicy": "Delete",
        "UpdateReplacePolicy": "Delete",
        "Properties": {"LogGroupName": name, "RetentionInDays": _ref("LogRetentionDays")},
    }


# --------------------------------------------------------------------------- values


def template_values(settings: Settings) -> dict[str, Any]:
    """Spec values for the AWS stack: the settings' names, deploy-time region/account/bucket."""
    values = settings.spec_values()
    values.update(
        region=REGION,
        account_id=ACCOUNT,
        bucket=BUCKET,
        state_machine_target="aws",
        ecs_cluster=settings.ecs_cluster,
        ecs_task_definition=settings.ecs_task_definition,
        # Generated role names (Ref of a role is its name): no CAPABILITY_NAMED_IAM needed.
        ecs_task_role=cfn("SparkJobTaskRole"),
        ecs_execution_role=cfn("SparkJobExecutionRole"),
    )
    return values


def _setting_values(settings: Settings) -> dict[str, Any]:
    """Every Settings field's value for the environment lists, deploy-time ones as tokens."""
    return {
        **settings.model_dump(),
        "region": REGION,
        "account_id": ACCOUNT,
        "bucket": BUCKET,
        "spark_driver_memory": cfn("SparkDriverMemory"),
        # ECS tasks report their own death and Step Functions enforces heartbeats: no watchdog.
        "state_machine_target": "aws",
    }


# --------------------------------------------------------------------------- sections


def _parameters(settings: Settings) -> dict[str, Any]:
    digest_uri = r"^\S+@sha256:[a-f0-9]{64}$"
    return {
        "BucketName": {
            "Type": "String",
            "Default": settings.bucket,
            "AllowedPattern": r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
            "Description": "The data bucket (S3 names are global: e.g. cartflow-data-<account-id>)",
        },
        "ServicesImageUri": {
            "Type": "String",
            "AllowedPattern": digest_uri,
            "Description": "cartflow-services image in ECR of this account/region, by digest (repo@sha256:...)",
        },
        "SparkImageUri": {
            "Type": "String",
            "AllowedPattern": digest_uri,
            "Description": "cartflow-spark image, by digest (repo@sha256:...)",
        },
        "VpcId": {"Type": "AWS::EC2::VPC::Id", "Description": "VPC of the Spark job tasks"},
        "SubnetIds": {
            "Type": "List<AWS::EC2::Subnet::Id>",
            "Description": "Subnets of the Spark job tasks (need a route to S3, DynamoDB, ECR, CloudWatch Logs)",
        },
        "SparkJobCpu": {
            "Type": "String",
            "Default": "2048",
            "AllowedValues": FARGATE_CPU,
            "Description": "Fargate CPU units of one Spark job task",
        },
        "SparkJobMemory": {
            "Type": "Number",
            "Default": 8192,
            "MinValue": 2048,
            "MaxValue": 122880,
            "Description": "Fargate memory (MiB) of one Spark job task; must suit SparkJobCpu",
        },
        "SparkDriverMemory": {
            "Type": "String",
            "Default": "6g",
            "AllowedPattern": r"^[0-9]+[mg]$",
            "Description": "JVM heap of the job (local[*]: driver = executors); leave ~2 GiB headroom",
        },
        "LogRetentionDays": {"Type": "Number", "Default": 30, "AllowedValues": LOG_RETENTION_DAYS},
        "FailureEmail": {
            "Type": "String",
            "Default": "",
            "Description": "Email subscribed to failed-batch notices (empty: none)",
        },
        "SuccessEmail": {
            "Type": "String",
            "Default": "",
            "Description": "Email subscribed to finished-batch notices (empty: none)",
        },
    }


def _storage(rendered: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """Bucket + notification, queues + queue policy, tables, topics: the spec's sections."""
    res: dict[str, Any] = {}
    queue_ids = {q["name"]: _logical_id(raw["name"]) for raw, q in zip(spec["queues"], rendered["queues"])}
    policies = []
    for q in rendered["queues"]:
        props: dict[str, Any] = {"QueueName": q["name"], "SqsManagedSseEnabled": True}
        if "visibility_timeout_seconds" in q:
            props["VisibilityTimeout"] = q["visibility_timeout_seconds"]
        if "message_retention_seconds" in q:
            props["MessageRetentionPeriod"] = q["message_retention_seconds"]
        if "dead_letter_queue" in q:
            props["RedrivePolicy"] = {
                "deadLetterTargetArn": _arn_of(queue_ids[q["dead_letter_queue"]]),
                "maxReceiveCount": q["max_receive_count"],
            }
        qid = queue_ids[q["name"]]
        res[qid] = {"Type": "AWS::SQS::Queue", "Properties": props}
        if "allow_s3_bucket" in q:
            # References the bucket by *name* (a parameter), not the Bucket resource: the bucket's
            # notification needs this policy first, so a reference back would be a cycle.
            policies.append(f"{qid}Policy")
            res[f"{qid}Policy"] = {
                "Type": "AWS::SQS::QueuePolicy",
                "Properties": {
                    "Queues": [_ref(qid)],
                    "PolicyDocument": _document(
                        [
                            {
                                "Sid": "OnlyFromTheBucket",
                                "Effect": "Allow",
                                "Principal": {"Service": "s3.amazonaws.com"},
                                "Action": "sqs:SendMessage",
                                "Resource": cfn(f"{qid}.Arn"),
                                "Condition": {
                                    "ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{q['allow_s3_bucket']}"},
                                    "StringEquals": {"aws:SourceAccount": ACCOUNT},
                                },
                            }
                        ]
                    ),
                },
            }

    b = rendered["bucket"]
    notifications = [
        {
            "Event": event,
            "Queue": _arn_of(queue_ids[n["queue"]]),
            "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": n["prefix"]}]}},
        }
        for n in b.get("notifications", [])
        for event in n["events"]
    ]
    res["DataBucket"] = {
        "Type": "AWS::S3::Bucket",
        # S3 sends a test message when the notification is set: the queue policy must exist.
        "DependsOn": policies,
        # The raw files, Delta tables and archive are the data of record: they outlive the stack.
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "BucketName": b["name"],
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
            "NotificationConfiguration": {"QueueConfigurations": notifications},
        },
    }
    res["DataBucketPolicy"] = {
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": _ref("DataBucket"),
            "PolicyDocument": _document(
                [
                    {
                        "Sid": "TlsOnly",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [f"arn:aws:s3:::{b['name']}", f"arn:aws:s3:::{b['name']}/*"],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                ]
            ),
        },
    }

    for raw, t in zip(spec["tables"], rendered["tables"]):
        res[_logical_id(raw["name"])] = {"Type": "AWS::DynamoDB::Table", "Properties": _table(t)}
    for raw, topic in zip(spec["topics"], rendered["topics"]):
        res[_logical_id(raw)] = {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": topic}}
    for which in ("Failure", "Success"):
        res[f"{which}EmailSubscription"] = {
            "Type": "AWS::SNS::Subscription",
            "Condition": f"Has{which}Email",
            "Properties": {"TopicArn": _ref(f"{which}Topic"), "Protocol": "email", "Endpoint": _ref(f"{which}Email")},
        }
    return res


def _key_schema(key: Mapping[str, str]) -> list[dict[str, str]]:
    schema = [{"AttributeName": key["hash"], "KeyType": "HASH"}]
    if "range" in key:
        schema.append({"AttributeName": key["range"], "KeyType": "RANGE"})
    return schema


def _table(t: Mapping[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = {
        "TableName": t["name"],
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": a, "AttributeType": ty} for a, ty in t["attributes"].items()],
        "KeySchema": _key_schema(t["key"]),
    }
    if t.get("indexes"):
        props["GlobalSecondaryIndexes"] = [
            {"IndexName": i["name"], "KeySchema": _key_schema(i), "Projection": {"ProjectionType": "ALL"}} for i in t["indexes"]
        ]
    if t.get("stream"):
        props["StreamSpecification"] = {"StreamViewType": t["stream"]}
    if t.get("ttl"):
        props["TimeToLiveSpecification"] = {"AttributeName": t["ttl"], "Enabled": True}
    return props


def _functions(
    settings: Settings,
    options: TemplateOptions,
    policies: Mapping[str, Any],
    rendered: Mapping[str, Any],
    spec: Mapping[str, Any],
) -> dict[str, Any]:
    res: dict[str, Any] = {}
    env = environment(FUNCTION_SETTINGS, _setting_values(settings))
    for f in FUNCTIONS:
        name = f"{options.name_prefix}-{f.principal}"
        log_group = f"{f.logical}LogGroup"
        doc = copy.deepcopy(policies[f.principal])
        doc["Statement"].append(_write_logs(log_group))
        res[log_group] = _log_group(f"/aws/lambda/{name}")
        res[f"{f.logical}Role"] = _role(
            "lambda.amazonaws.com", {f"{options.name_prefix}-{f.principal}": doc}, source_account=False
        )
        res[f"{f.logical}Function"] = {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "FunctionName": name,
                "Description": f"cartflow {f.module}: {f.handler}",
                "PackageType": "Image",
                "Code": {"ImageUri": _ref("ServicesImageUri")},
                "ImageConfig": {"EntryPoint": LAMBDA_ENTRYPOINT, "Command": [f.handler]},
                "Architectures": [options.architecture],
                "Role": cfn(f"{f.logical}Role.Arn"),
                "Timeout": f.timeout_seconds,
                "MemorySize": f.memory_mb,
                "Environment": {"Variables": env},
                "LoggingConfig": {"LogGroup": _ref(log_group), "LogFormat": "Text"},
            },
        }

    # S3 -> SQS -> ingest, as locally (the spec's bucket notification names the queue).
    (notification,) = rendered["bucket"]["notifications"]
    queue_id = next(
        _logical_id(r["name"]) for r, q in zip(spec["queues"], rendered["queues"]) if q["name"] == notification["queue"]
    )
    res["IngestEventSource"] = {
        "Type": "AWS::Lambda::EventSourceMapping",
        "Properties": {
            "FunctionName": _ref("IngestFunction"),
            "EventSourceArn": cfn(f"{queue_id}.Arn"),
            "BatchSize": 10,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        },
    }
    # The batch chunks stream -> stream trigger (the one table the spec gives a stream).
    (streamed,) = [_logical_id(r["name"]) for r, t in zip(spec["tables"], rendered["tables"]) if t.get("stream")]
    res["StreamTriggerEventSource"] = {
        "Type": "AWS::Lambda::EventSourceMapping",
        "Properties": {
            "FunctionName": _ref("StreamTriggerFunction"),
            "EventSourceArn": cfn(f"{streamed}.StreamArn"),
            # Chunks written before the mapping existed are still dispatched.
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": 10,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            # A start that keeps failing is also retried by the controller's sweep of pending chunks.
            "MaximumRetryAttempts": 10,
        },
    }

    scheduled = [f for f in FUNCTIONS if f.module in SCHEDULED]
    res["SchedulerRole"] = _role(
        "scheduler.amazonaws.com",
        {
            f"{options.name_prefix}-scheduler": _document(
                [
                    {
                        "Sid": "InvokeScheduledFunctions",
                        "Effect": "Allow",
                        "Action": ["lambda:InvokeFunction"],
                        "Resource": [cfn(f"{f.logical}Function.Arn") for f in scheduled],
                    }
                ]
            )
        },
    )
    for f in scheduled:
        res[f"{f.logical}Schedule"] = {
            "Type": "AWS::Scheduler::Schedule",
            "Properties": {
                "Name": f"{options.name_prefix}-{f.principal}",
                "Description": f"Ticks the {f.module} (locally: every {getattr(settings, f'{f.module}_interval_seconds')} s)",
                "ScheduleExpression": options.schedule_expression,
                "FlexibleTimeWindow": {"Mode": "OFF"},
                "State": "ENABLED",
                "Target": {
                    "Arn": cfn(f"{f.logical}Function.Arn"),
                    "RoleArn": cfn("SchedulerRole.Arn"),
                    "Input": "{}",
                    # The next tick does the same work: no retries that could overlap it.
                    "RetryPolicy": {"MaximumRetryAttempts": 0},
                },
            },
        }
    return res


def _spark_job(settings: Settings, options: TemplateOptions, policies: Mapping[str, Any]) -> dict[str, Any]:
    res: dict[str, Any] = {}
    log_group = "SparkJobLogGroup"
    res[log_group] = _log_group(f"/ecs/{settings.ecs_task_definition}")
    res["SparkCluster"] = {
        "Type": "AWS::ECS::Cluster",
        "Properties": {"ClusterName": settings.ecs_cluster},
    }
    res["SparkJobSecurityGroup"] = {
        "Type": "AWS::EC2::SecurityGroup",
        "Properties": {
            "GroupDescription": "cartflow Spark jobs: no inbound; HTTPS out to S3, DynamoDB, ECR, CloudWatch Logs",
            "VpcId": _ref("VpcId"),
            "SecurityGroupEgress": [
                {"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "CidrIp": "0.0.0.0/0", "Description": "AWS APIs"}
            ],
        },
    }
    execution: list[dict[str, Any]] = [_write_logs(log_group)]
    if options.spark_repository:
        execution += [
            # AWS-REQUIRED "*": ecr:GetAuthorizationToken has no resource-level permissions.
            {"Sid": "EcrLogin", "Effect": "Allow", "Action": ["ecr:GetAuthorizationToken"], "Resource": "*"},
            {
                "Sid": "PullSparkImage",
                "Effect": "Allow",
                "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                "Resource": [f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{options.spark_repository}"],
            },
        ]
    res["SparkJobExecutionRole"] = _role(
        "ecs-tasks.amazonaws.com", {f"{options.name_prefix}-spark-job-execution": _document(execution)}
    )
    res["SparkJobTaskRole"] = _role("ecs-tasks.amazonaws.com", {f"{options.name_prefix}-spark-job": policies["spark-job"]})
    env = environment(JOB_SETTINGS, _setting_values(settings))
    res["SparkJobTaskDefinition"] = {
        "Type": "AWS::ECS::TaskDefinition",
        "Properties": {
            # The state machine runs the family (latest ACTIVE revision); both jobs share it and
            # choose the job by the command override.
            "Family": settings.ecs_task_definition,
            "RequiresCompatibilities": ["FARGATE"],
            "NetworkMode": "awsvpc",
            "Cpu": _ref("SparkJobCpu"),
            "Memory": _ref("SparkJobMemory"),
            "RuntimePlatform": {
                "OperatingSystemFamily": "LINUX",
                "CpuArchitecture": "ARM64" if options.architecture == "arm64" else "X86_64",
            },
            "ExecutionRoleArn": cfn("SparkJobExecutionRole.Arn"),
            "TaskRoleArn": cfn("SparkJobTaskRole.Arn"),
            "ContainerDefinitions": [
                {
                    # The image's ENTRYPOINT (python -m spark.jobs) is kept: the state machine
                    # overrides the command with `<job> --batch <json>`.
                    "Name": settings.ecs_container_name,
                    "Image": _ref("SparkImageUri"),
                    "Essential": True,
                    "Environment": [{"Name": k, "Value": v} for k, v in env.items()],
                    "LogConfiguration": {
                        "LogDriver": "awslogs",
                        "Options": {
                            "awslogs-group": _ref(log_group),
                            "awslogs-region": _ref("AWS::Region"),
                            "awslogs-stream-prefix": "job",
                        },
                    },
                }
            ],
        },
    }
    return res


def state_machine_definition(settings: Settings, options: TemplateOptions) -> str:
    """The ``aws`` rendering with deploy-time values as ``${...}`` for Fn::Sub (compact JSON)."""
    params: dict[str, object] = {
        "bucket": BUCKET,
        "batch_chunks_table": settings.batch_chunks_table,
        # Ref of an SNS topic is its ARN.
        "success_topic_arn": cfn("SuccessTopic"),
        "failure_topic_arn": cfn("FailureTopic"),
        **AWS_RETRY_DEFAULTS,
        "ecs_cluster": settings.ecs_cluster,
        "ecs_task_definition": settings.ecs_task_definition,
        "ecs_container_name": settings.ecs_container_name,
        # One string in a one-element list; SubnetIdsJson joins the list parameter with '","'.
        "subnets": [cfn("SubnetIdsJson")],
        "security_groups": [cfn("SparkJobSecurityGroup.GroupId")],
        "ecs_assign_public_ip": "ENABLED" if options.assign_public_ip else "DISABLED",
    }
    text = json.dumps(build_definition("aws", params), separators=(",", ":"))
    if "${" in text:  # Fn::Sub would read it as a variable
        raise ValueError("the rendered state machine contains '${'")
    return _TOKEN.sub(r"${\1}", text)


def _state_machine(
    settings: Settings, options: TemplateOptions, rendered: Mapping[str, Any], policies: Mapping[str, Any]
) -> dict[str, Any]:
    return {
        "StateMachineRole": _role("states.amazonaws.com", {f"{options.name_prefix}-state-machine": policies["state-machine"]}),
        "StateMachine": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "StateMachineName": rendered["state_machine"]["name"],
                "StateMachineType": "STANDARD",
                "RoleArn": cfn("StateMachineRole.Arn"),
                "DefinitionString": {
                    "Fn::Sub": [
                        state_machine_definition(settings, options),
                        {"SubnetIdsJson": {"Fn::Join": ['","', _ref("SubnetIds")]}},
                    ]
                },
            },
        },
    }


# --------------------------------------------------------------------------- entry point


def build_template(settings: Settings, options: TemplateOptions | None = None, spec: Mapping[str, Any] | None = None) -> Template:
    """The whole stack as a CloudFormation template dict."""
    options = options or TemplateOptions()
    spec = spec if spec is not None else load_spec()
    values = template_values(settings)
    rendered = render(spec, values)
    policies = iam.policies(values, spec)
    resources: dict[str, Any] = {}
    for part in (
        _storage(rendered, spec),
        _functions(settings, options, policies, rendered, spec),
        _spark_job(settings, options, policies),
        _state_machine(settings, options, rendered, policies),
    ):
        clash = set(part) & set(resources)
        if clash:
            raise ValueError(f"duplicate logical ids: {sorted(clash)}")
        resources.update(part)
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "cartflow pipeline. Generated by cartflow/infra/cloudformation.py from cartflow/core/spec.yaml; do not edit.",
        "Parameters": _parameters(settings),
        "Conditions": {
            f"Has{which}Email": {"Fn::Not": [{"Fn::Equals": [_ref(f"{which}Email"), ""]}]} for which in ("Failure", "Success")
        },
        "Resources": resources,
        "Outputs": {
            "BucketName": {"Value": _ref("DataBucket")},
            "StateMachineArn": {"Value": _ref("StateMachine")},
            "FailureTopicArn": {"Value": _ref("FailureTopic")},
            "SuccessTopicArn": {"Value": _ref("SuccessTopic")},
            "SparkCluster": {"Value": _ref("SparkCluster")},
            **{f"{f.logical}FunctionArn": {"Value": cfn(f"{f.logical}Function.Arn")} for f in FUNCTIONS},
        },
    }
    return _finalise(template)  # type: ignore[no-any-return]


def template_body(template: Template) -> str:
    """Compact JSON, as sent to CloudFormation; raises if over the inline size limit."""
    body = json.dumps(template, separators=(",", ":"))
    if len(body.encode()) > MAX_TEMPLATE_BODY_BYTES:
        raise ValueError(f"template is {len(body.encode())} bytes; CloudFormation takes {MAX_TEMPLATE_BODY_BYTES} inline")
    return body
