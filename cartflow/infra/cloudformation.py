"""The AWS deployment as one CloudFormation template, generated from the resource spec.

``build_template(settings)`` returns the template as a dict (``cartflow deploy-template``
prints it; ``cartflow deploy`` ships it). Nothing here is a second source of truth:

* bucket, queues, tables (keys, indexes, stream, TTL), topics and the state machine name come
  from the typed spec (``cartflow.core.spec.load``) rendered with the same values as the
  local stack;
* every role's permissions come from ``cartflow.infra.iam.policies`` (the one
  least-privilege source), plus the log-group statements only the IaC can name;
* the state machine is ``orchestrator/render.py``'s ``aws`` rendering (``ecs:runTask.sync``),
  its parameters from ``state_machine_params`` like every other caller's;
* the functions' and the job's environment is ``cartflow.infra.environment``'s lists.

What exists only on AWS is added here: Lambda functions (container images of the services
image, one per handler), their event sources (SQS, DynamoDB Streams, EventBridge Scheduler),
the ECS cluster and Fargate task definition, log groups, an egress-only security group.

Intrinsic functions are objects (``cartflow.infra.intrinsics``: Ref, GetAtt, Sub, Join ...),
turned into JSON once at the end. Values CloudFormation only knows at deploy time (region,
account, the bucket parameter, generated role names) reach the text-only renderers (the spec,
iam.py, render.py) as Fn::Sub variables (``${AWS::Region}``); ``sub`` wraps what comes back
where it is embedded, and every name the template refers to is checked to exist.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cartflow.core.config import Settings
from cartflow.core.spec import Bucket, Spec, Table, load
from cartflow.infra import distributed, iam, monitoring
from cartflow.infra.environment import FUNCTION_SETTINGS, JOB_SETTINGS, environment
from cartflow.infra.intrinsics import Equals, GetAtt, Join, Not, Ref, Sub, check_names, sub, sub_strings, to_json
from orchestrator.render import DeployTime, build_definition, state_machine_params, without_comments

Template = dict[str, Any]

# CloudFormation accepts a template body of at most 51,200 bytes in the API call itself, and
# 1,000,000 bytes from S3 (TemplateURL): `cartflow deploy` uploads it to its artifact bucket.
MAX_TEMPLATE_BODY_BYTES = 51_200
MAX_TEMPLATE_BYTES = 1_000_000

REGION, ACCOUNT, BUCKET = Ref("AWS::Region"), Ref("AWS::AccountId"), Ref("BucketName")
# The state machine's Fn::Sub variable holding the SubnetIds list joined as '","' (see below).
SUBNET_IDS_JSON = "SubnetIdsJson"
# Where the DynamoDB stream mapping puts a batch of records it gave up on.
STREAM_FAILURES = "StreamTriggerFailures"
# AWS-REQUIRED "*": the CloudWatch Logs delivery actions Step Functions logging needs have no
# resource-level permissions (AWS's documented policy for execution logging).
LOG_DELIVERY_ACTIONS = [
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
]


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
# The services image's own ENTRYPOINT (services/lambda-entrypoint.sh), spelled out: given a handler
# it runs awslambdaric, which serves the Runtime API on Lambda.
LAMBDA_ENTRYPOINT = ["/lambda-entrypoint.sh"]
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


def _logical_id(spec_name: str) -> str:
    """Spec name -> logical id: ``{events_table}`` -> EventsTable, ``{ingest_queue}-dlq`` -> IngestQueueDlq."""
    return "".join(w[:1].upper() + w[1:] for w in re.findall(r"[A-Za-z0-9]+", spec_name))


def _arn_of(logical: str) -> GetAtt:
    return GetAtt(logical, "Arn")


def _versioning(b: Bucket) -> dict[str, Any]:
    """Versioning and the lifecycle rules that go with it (the same ones `resources apply` sets)."""
    out: dict[str, Any] = {}
    if b.versioning:
        out["VersioningConfiguration"] = {"Status": "Enabled"}
    if b.noncurrent_days:
        out["LifecycleConfiguration"] = {"Rules": [_cfn_rule(r) for r in b.lifecycle_rules()]}
    return out


def _cfn_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """An S3 API lifecycle rule in CloudFormation's spelling."""
    out: dict[str, Any] = {"Id": rule["ID"], "Status": rule["Status"], "Prefix": rule["Filter"]["Prefix"]}
    if "NoncurrentVersionExpiration" in rule:
        out["NoncurrentVersionExpiration"] = {"NoncurrentDays": rule["NoncurrentVersionExpiration"]["NoncurrentDays"]}
    expiration = rule.get("Expiration", {})
    if expiration.get("ExpiredObjectDeleteMarker"):
        out["ExpiredObjectDeleteMarker"] = True
    if "Days" in expiration:
        out["ExpirationInDays"] = expiration["Days"]
    return out


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
        "Resource": [_arn_of(log_group)],
    }


def _send_to(queue: str) -> dict[str, Any]:
    # An event source mapping's on-failure destination is sent to with the function's role.
    return {"Sid": "OnFailureDestination", "Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": [_arn_of(queue)]}


def _log_group(name: str) -> dict[str, Any]:
    return {
        "Type": "AWS::Logs::LogGroup",
        "DeletionPolicy": "Delete",
        "UpdateReplacePolicy": "Delete",
        "Properties": {"LogGroupName": name, "RetentionInDays": Ref("LogRetentionDays")},
    }


# --------------------------------------------------------------------------- values


def template_values(settings: Settings) -> dict[str, Any]:
    """Spec values for the AWS stack: the settings' names, deploy-time region/account/bucket (as text)."""
    values = settings.spec_values()
    values.update(
        region=str(REGION),
        account_id=str(ACCOUNT),
        bucket=str(BUCKET),
        state_machine_target="aws",
        ecs_cluster=settings.ecs_cluster,
        ecs_task_definition=settings.ecs_task_definition,
        # Generated role names (Ref of a role is its name): no CAPABILITY_NAMED_IAM needed.
        ecs_task_role=str(Ref("SparkJobTaskRole")),
        ecs_execution_role=str(Ref("SparkJobExecutionRole")),
        delta_multi_writer=settings.delta_multi_writer,  # the job's LogStore table (iam.py)
    )
    return values


def _environment(fields: tuple[str, ...], settings: Settings) -> dict[str, Any]:
    """The ``CARTFLOW_*`` variables of ``fields``, deploy-time values as Ref."""
    values = {
        **settings.model_dump(),
        "region": REGION,
        "account_id": ACCOUNT,
        "bucket": BUCKET,
        "spark_driver_memory": Ref("SparkDriverMemory"),
        # ECS tasks report their own death and Step Functions enforces heartbeats: no watchdog.
        "state_machine_target": "aws",
    }
    return {name: sub(text) for name, text in environment(fields, values).items()}


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


def _storage(spec: Spec) -> dict[str, Any]:
    """Bucket + notification, queues + queue policy, tables, topics: the spec's sections."""
    res: dict[str, Any] = {}
    queue_ids = {q.name: _logical_id(q.spec_name) for q in spec.queues}
    policies = []
    for q in spec.queues:
        props: dict[str, Any] = {"QueueName": q.name, "SqsManagedSseEnabled": True}
        if q.visibility_timeout_seconds is not None:
            props["VisibilityTimeout"] = q.visibility_timeout_seconds
        if q.message_retention_seconds is not None:
            props["MessageRetentionPeriod"] = q.message_retention_seconds
        if q.dead_letter:
            props["RedrivePolicy"] = {
                "deadLetterTargetArn": _arn_of(queue_ids[q.dead_letter.queue]),
                "maxReceiveCount": q.dead_letter.max_receive_count,
            }
        qid = queue_ids[q.name]
        res[qid] = {"Type": "AWS::SQS::Queue", "Properties": props}
        if q.allow_s3_bucket is not None:
            # References the bucket by *name* (a parameter), not the Bucket resource: the bucket's
            # notification needs this policy first, so a reference back would be a cycle.
            policies.append(f"{qid}Policy")
            res[f"{qid}Policy"] = {
                "Type": "AWS::SQS::QueuePolicy",
                "Properties": {
                    "Queues": [Ref(qid)],
                    "PolicyDocument": _document(
                        [
                            {
                                "Sid": "OnlyFromTheBucket",
                                "Effect": "Allow",
                                "Principal": {"Service": "s3.amazonaws.com"},
                                "Action": "sqs:SendMessage",
                                "Resource": _arn_of(qid),
                                "Condition": {
                                    "ArnEquals": {"aws:SourceArn": sub(f"arn:aws:s3:::{q.allow_s3_bucket}")},
                                    "StringEquals": {"aws:SourceAccount": ACCOUNT},
                                },
                            }
                        ]
                    ),
                },
            }

    b = spec.bucket
    notifications = [
        {
            "Event": event,
            "Queue": _arn_of(queue_ids[n.queue]),
            "Filter": {"S3Key": {"Rules": [{"Name": "prefix", "Value": n.prefix}]}},
        }
        for n in b.notifications
        for event in n.events
    ]
    res["DataBucket"] = {
        "Type": "AWS::S3::Bucket",
        # S3 sends a test message when the notification is set: the queue policy must exist.
        "DependsOn": policies,
        # The raw files, Delta tables and archive are the data of record: they outlive the stack.
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": {
            "BucketName": sub(b.name),
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
            **_versioning(b),
        },
    }
    res["DataBucketPolicy"] = {
        "Type": "AWS::S3::BucketPolicy",
        "Properties": {
            "Bucket": Ref("DataBucket"),
            "PolicyDocument": _document(
                [
                    {
                        "Sid": "TlsOnly",
                        "Effect": "Deny",
                        "Principal": "*",
                        "Action": "s3:*",
                        "Resource": [sub(f"arn:aws:s3:::{b.name}"), sub(f"arn:aws:s3:::{b.name}/*")],
                        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                    }
                ]
            ),
        },
    }

    for t in spec.tables:
        res[_logical_id(t.spec_name)] = {"Type": "AWS::DynamoDB::Table", "Properties": _table(t)}
    for topic in spec.topics:
        res[_logical_id(topic.spec_name)] = {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": topic.name}}
    for which in ("Failure", "Success"):
        res[f"{which}EmailSubscription"] = {
            "Type": "AWS::SNS::Subscription",
            "Condition": f"Has{which}Email",
            "Properties": {"TopicArn": Ref(f"{which}Topic"), "Protocol": "email", "Endpoint": Ref(f"{which}Email")},
        }
    return res


def _table(t: Table) -> dict[str, Any]:
    props = t.definition()
    if t.stream:
        props["StreamSpecification"] = {"StreamViewType": t.stream}
    if t.ttl:
        props["TimeToLiveSpecification"] = {"AttributeName": t.ttl, "Enabled": True}
    # Any second of the last 35 days can be restored (a bad deploy, a wrong `batches retry`).
    props["PointInTimeRecoverySpecification"] = {"PointInTimeRecoveryEnabled": True}
    return props


def _functions(settings: Settings, options: TemplateOptions, policies: Mapping[str, Any], spec: Spec) -> dict[str, Any]:
    res: dict[str, Any] = {}
    env = _environment(FUNCTION_SETTINGS, settings)
    for f in FUNCTIONS:
        name = f"{options.name_prefix}-{f.principal}"
        log_group = f"{f.logical}LogGroup"
        doc = copy.deepcopy(policies[f.principal])
        doc["Statement"].append(_write_logs(log_group))
        if f.module == "stream_trigger":
            doc["Statement"].append(_send_to(STREAM_FAILURES))
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
                "Code": {"ImageUri": Ref("ServicesImageUri")},
                "ImageConfig": {"EntryPoint": LAMBDA_ENTRYPOINT, "Command": [f.handler]},
                "Architectures": [options.architecture],
                "Role": _arn_of(f"{f.logical}Role"),
                "Timeout": f.timeout_seconds,
                "MemorySize": f.memory_mb,
                "Environment": {"Variables": env},
                "LoggingConfig": {"LogGroup": Ref(log_group), "LogFormat": "Text"},
            },
        }

    # S3 -> SQS -> ingest, as locally (the spec's bucket notification names the queue).
    (notification,) = spec.bucket.notifications
    res["IngestEventSource"] = {
        "Type": "AWS::Lambda::EventSourceMapping",
        "Properties": {
            "FunctionName": Ref("IngestFunction"),
            "EventSourceArn": _arn_of(_logical_id(spec.queue(notification.queue).spec_name)),
            "BatchSize": 10,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        },
    }
    # The batch chunks stream -> stream trigger (the one table the spec gives a stream).
    (streamed,) = [t for t in spec.tables if t.stream]
    res["StreamTriggerEventSource"] = {
        "Type": "AWS::Lambda::EventSourceMapping",
        "Properties": {
            "FunctionName": Ref("StreamTriggerFunction"),
            "EventSourceArn": GetAtt(_logical_id(streamed.spec_name), "StreamArn"),
            # Chunks written before the mapping existed are still dispatched.
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": 10,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            # A start that keeps failing is also retried by the controller's sweep of pending chunks.
            "MaximumRetryAttempts": 10,
            # ... and once the mapping gives up, the records' description is kept (and alarmed on).
            "DestinationConfig": {"OnFailure": {"Destination": _arn_of(STREAM_FAILURES)}},
        },
    }
    res[STREAM_FAILURES] = {
        "Type": "AWS::SQS::Queue",
        "Properties": {
            "QueueName": f"{options.name_prefix}-stream-trigger-failures",
            "SqsManagedSseEnabled": True,
            "MessageRetentionPeriod": 1_209_600,  # 14 days, SQS's maximum
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
                        "Resource": [_arn_of(f"{f.logical}Function") for f in scheduled],
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
                    "Arn": _arn_of(f"{f.logical}Function"),
                    "RoleArn": _arn_of("SchedulerRole"),
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
            "VpcId": Ref("VpcId"),
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
                "Resource": [sub(f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{options.spark_repository}")],
            },
        ]
    res["SparkJobExecutionRole"] = _role(
        "ecs-tasks.amazonaws.com", {f"{options.name_prefix}-spark-job-execution": _document(execution)}
    )
    res["SparkJobTaskRole"] = _role("ecs-tasks.amazonaws.com", {f"{options.name_prefix}-spark-job": policies["spark-job"]})
    env = _environment(JOB_SETTINGS, settings)
    res["SparkJobTaskDefinition"] = {
        "Type": "AWS::ECS::TaskDefinition",
        "Properties": {
            # The state machine runs the family (latest ACTIVE revision); both jobs share it and
            # choose the job by the command override.
            "Family": settings.ecs_task_definition,
            "RequiresCompatibilities": ["FARGATE"],
            "NetworkMode": "awsvpc",
            "Cpu": Ref("SparkJobCpu"),
            "Memory": Ref("SparkJobMemory"),
            "RuntimePlatform": {
                "OperatingSystemFamily": "LINUX",
                "CpuArchitecture": "ARM64" if options.architecture == "arm64" else "X86_64",
            },
            "ExecutionRoleArn": _arn_of("SparkJobExecutionRole"),
            "TaskRoleArn": _arn_of("SparkJobTaskRole"),
            "ContainerDefinitions": [
                {
                    # The image's ENTRYPOINT (python -m spark.jobs) is kept: the state machine
                    # overrides the command with `<job> --batch <json>`.
                    "Name": settings.ecs_container_name,
                    "Image": Ref("SparkImageUri"),
                    "Essential": True,
                    "Environment": [{"Name": k, "Value": v} for k, v in env.items()],
                    "LogConfiguration": {
                        "LogDriver": "awslogs",
                        "Options": {
                            "awslogs-group": Ref(log_group),
                            "awslogs-region": REGION,
                            "awslogs-stream-prefix": "job",
                        },
                    },
                }
            ],
        },
    }
    return res


def state_machine_definition(settings: Settings, options: TemplateOptions) -> Sub:
    """The ``aws`` rendering (compact JSON) in the Fn::Sub that fills in its deploy-time values."""
    security_group = GetAtt("SparkJobSecurityGroup", "GroupId")
    values = {
        **settings.model_dump(),
        "bucket": DeployTime(str(BUCKET)),
        # One string in a one-element list; SubnetIdsJson joins the list parameter with '","'.
        "ecs_subnets": [DeployTime("${" + SUBNET_IDS_JSON + "}")],
        "ecs_security_groups": [DeployTime(str(security_group))],
        **distributed.state_machine_values(settings),
    }
    # Ref of an SNS topic is its ARN.
    arns = {"success_topic_arn": DeployTime(str(Ref("SuccessTopic"))), "failure_topic_arn": DeployTime(str(Ref("FailureTopic")))}
    params = state_machine_params("aws", values, arns=arns, assign_public_ip=options.assign_public_ip)
    text = json.dumps(without_comments(build_definition("aws", params)), separators=(",", ":"))
    return Sub(text, {SUBNET_IDS_JSON: Join('","', Ref("SubnetIds"))})


def _state_machine(settings: Settings, options: TemplateOptions, spec: Spec, policies: Mapping[str, Any]) -> dict[str, Any]:
    # Execution logging: every failed state with its error and cause (ERROR level; the data
    # logged is what the failure notice carries anyway). /aws/vendedlogs/ is the prefix AWS
    # recommends, so the logs resource policy Step Functions writes stays small.
    log_group = "StateMachineLogGroup"
    doc = copy.deepcopy(policies["state-machine"])
    doc["Statement"].append({"Sid": "DeliverExecutionLogs", "Effect": "Allow", "Action": LOG_DELIVERY_ACTIONS, "Resource": "*"})
    return {
        log_group: _log_group(f"/aws/vendedlogs/states/{spec.state_machine.name}"),
        "StateMachineRole": _role("states.amazonaws.com", {f"{options.name_prefix}-state-machine": doc}),
        "StateMachine": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "StateMachineName": spec.state_machine.name,
                "StateMachineType": "STANDARD",
                "RoleArn": _arn_of("StateMachineRole"),
                "DefinitionString": state_machine_definition(settings, options),
                "LoggingConfiguration": {
                    "Level": "ERROR",
                    "IncludeExecutionData": True,
                    "Destinations": [{"CloudWatchLogsLogGroup": {"LogGroupArn": _arn_of(log_group)}}],
                },
            },
        },
    }


def _alarms(spec: Spec) -> dict[str, Any]:
    """monitoring.py's alarms on this template's functions, dead-letter queues and state machine."""
    logical = {q.name: _logical_id(q.spec_name) for q in spec.queues}
    dead_letters = {
        logical[q.dead_letter.queue]: f"a message reached {q.dead_letter.queue}: {q.name} gave up on it"
        for q in spec.queues
        if q.dead_letter
    }
    dead_letters[STREAM_FAILURES] = "a batch of chunk-stream records reached the stream trigger's failure queue"
    functions = {f"{f.logical}Function": f.module for f in FUNCTIONS}
    return monitoring.alarms(functions, dead_letters, "StateMachine", "FailureTopic")


# --------------------------------------------------------------------------- entry point


def build_template(settings: Settings, options: TemplateOptions | None = None, spec: Mapping[str, Any] | None = None) -> Template:
    """The whole stack as a CloudFormation template dict (``spec``: spec.yaml's content, default the file)."""
    options = options or TemplateOptions()
    values = template_values(settings)
    typed = load(values, spec)
    policies = {name: sub_strings(doc) for name, doc in iam.policies(values, typed).items()}
    resources: dict[str, Any] = {}
    for part in (
        _storage(typed),
        _functions(settings, options, policies, typed),
        _spark_job(settings, options, policies),
        _state_machine(settings, options, typed, policies),
        _alarms(typed),
        distributed.template_resources(settings),
    ):
        clash = set(part) & set(resources)
        if clash:
            raise ValueError(f"duplicate logical ids: {sorted(clash)}")
        resources.update(part)
    distributed.trust_pods(settings, resources)
    parameters = {**_parameters(settings), **distributed.template_parameters(settings)}
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "cartflow pipeline. Generated by cartflow/infra/cloudformation.py from cartflow/core/spec.yaml; do not edit.",
        "Parameters": parameters,
        "Conditions": {f"Has{which}Email": Not(Equals(Ref(f"{which}Email"), "")) for which in ("Failure", "Success")},
        "Resources": resources,
        "Outputs": {
            "BucketName": {"Value": Ref("DataBucket")},
            "StateMachineArn": {"Value": Ref("StateMachine")},
            "FailureTopicArn": {"Value": Ref("FailureTopic")},
            "SuccessTopicArn": {"Value": Ref("SuccessTopic")},
            "SparkCluster": {"Value": Ref("SparkCluster")},
            **{f"{f.logical}FunctionArn": {"Value": _arn_of(f"{f.logical}Function")} for f in FUNCTIONS},
        },
    }
    check_names(parameters, resources, template)
    rendered: Template = to_json(template)
    return rendered


def template_body(template: Template) -> str:
    """Compact JSON, as uploaded for CloudFormation; raises if over its size limit for S3 templates."""
    body = json.dumps(template, separators=(",", ":"))
    if len(body.encode()) > MAX_TEMPLATE_BYTES:
        raise ValueError(f"template is {len(body.encode())} bytes; CloudFormation takes {MAX_TEMPLATE_BYTES} from S3")
    return body
