"""Apply the resource spec (spec.yaml) to AWS or an emulator, idempotently.

Deliberately stdlib + PyYAML + a botocore-compatible client factory only: the same module
runs inside the emulator container's ready.d hook, whose Python has botocore but neither
boto3 nor pydantic. It reads the typed spec (cartflow.core.spec.load) and renders the state
machine with orchestrator/render.py (local target: nothing beyond the stdlib either).
Running it twice changes nothing the second time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from cartflow.core.spec import Bucket, Queue, Spec, Table, arn, load
from orchestrator.render import render_state_machine
from orchestrator.render import state_machine_params as render_params

log = logging.getLogger("cartflow.resources")

ClientFactory = Callable[[str], Any]


# --------------------------------------------------------------------------- S3 + SQS


def _ensure_queue(sqs: Any, q: Queue, values: Mapping[str, Any]) -> str:
    attrs: dict[str, str] = {}
    if q.visibility_timeout_seconds is not None:
        attrs["VisibilityTimeout"] = str(q.visibility_timeout_seconds)
    if q.message_retention_seconds is not None:
        attrs["MessageRetentionPeriod"] = str(q.message_retention_seconds)
    if q.dead_letter:
        dlq_arn = arn(values, "sqs", q.dead_letter.queue)
        attrs["RedrivePolicy"] = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": q.dead_letter.max_receive_count})
    if q.allow_s3_bucket is not None:
        attrs["Policy"] = json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "s3.amazonaws.com"},
                        "Action": "sqs:SendMessage",
                        "Resource": arn(values, "sqs", q.name),
                        "Condition": {"ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{q.allow_s3_bucket}"}},
                    }
                ],
            }
        )
    url: str = sqs.create_queue(QueueName=q.name)["QueueUrl"]  # idempotent by name
    if attrs:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attrs)
    return url


def _ensure_bucket(s3: Any, b: Bucket, values: Mapping[str, Any]) -> None:
    name = b.name
    try:
        s3.head_bucket(Bucket=name)
    except Exception:  # 404/403: create (a name owned by someone else fails loudly here)
        kwargs: dict[str, Any] = {"Bucket": name}
        if values["region"] != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": values["region"]}
        s3.create_bucket(**kwargs)
    if b.versioning:  # before the folder markers and notifications: every object gets a version
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    if b.noncurrent_days:
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": b.lifecycle_rules()})
    for prefix in b.prefixes:
        s3.put_object(Bucket=name, Key=prefix, Body=b"")
    configs = [
        {
            "QueueArn": arn(values, "sqs", n.queue),
            "Events": list(n.events),
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": n.prefix}]}},
        }
        for n in b.notifications
    ]
    s3.put_bucket_notification_configuration(Bucket=name, NotificationConfiguration={"QueueConfigurations": configs})


# --------------------------------------------------------------------------- DynamoDB


def _wait_active(ddb: Any, name: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        desc: dict[str, Any] = ddb.describe_table(TableName=name)["Table"]
        if desc["TableStatus"] == "ACTIVE":
            return desc
        if time.monotonic() > deadline:
            raise TimeoutError(f"table {name} not ACTIVE after {timeout}s")
        time.sleep(0.5)


def _ensure_table(ddb: Any, t: Table) -> None:
    name = t.name
    try:
        ddb.describe_table(TableName=name)
    except ddb.exceptions.ResourceNotFoundException:
        kwargs = t.definition()
        if t.stream:
            kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": t.stream}
        ddb.create_table(**kwargs)
        log.info("created table %s", name)
    _wait_active(ddb, name)
    if t.ttl:
        current = ddb.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
        if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": t.ttl})


# --------------------------------------------------------------------------- SNS + Step Functions


def _ensure_activity(sfn: Any, name: str) -> str:
    for page in sfn.get_paginator("list_activities").paginate():
        for a in page["activities"]:
            if a["name"] == name:
                return str(a["activityArn"])
    return str(sfn.create_activity(name=name)["activityArn"])


def _activity_arns(values: Mapping[str, Any], by_name: Mapping[str, str]) -> dict[str, str]:
    """The render parameters naming the two job activities, from their ARNs by activity name."""
    return {
        "validate_activity_arn": by_name[values["validate_activity"]],
        "transform_activity_arn": by_name[values["transform_activity"]],
    }


def _ensure_state_machine(sfn: Any, name: str, role: str, definition: str) -> str:
    for page in sfn.get_paginator("list_state_machines").paginate():
        for sm in page["stateMachines"]:
            if sm["name"] == name:
                sfn.update_state_machine(stateMachineArn=sm["stateMachineArn"], definition=definition, roleArn=role)
                return str(sm["stateMachineArn"])
    return str(sfn.create_state_machine(name=name, definition=definition, roleArn=role, type="STANDARD")["stateMachineArn"])


# --------------------------------------------------------------------------- entry point


def apply_spec(values: Mapping[str, Any], client: ClientFactory, spec: Spec | Mapping[str, Any] | None = None) -> dict[str, str]:
    """Create/update every resource; returns a name -> ARN/URL summary.

    ``spec``: the typed spec (rendered with ``values``), or spec.yaml's content to render with
    them (default: the file)."""
    spec = spec if isinstance(spec, Spec) else load(values, spec)
    out: dict[str, str] = {}
    sqs, s3, ddb, sns, sfn = (client(s) for s in ("sqs", "s3", "dynamodb", "sns", "stepfunctions"))
    for q in spec.queues:  # queues before the bucket notification that targets them
        out[q.name] = _ensure_queue(sqs, q, values)
    _ensure_bucket(s3, spec.bucket, values)
    out[spec.bucket.name] = f"s3://{spec.bucket.name}"
    for t in spec.tables:
        _ensure_table(ddb, t)
        out[t.name] = arn(values, "dynamodb", f"table/{t.name}")
    for topic in spec.topics:
        out[topic.name] = str(sns.create_topic(Name=topic.name)["TopicArn"])  # idempotent by name
    activity_arns = {a.name: _ensure_activity(sfn, a.name) for a in spec.activities}
    out.update(activity_arns)
    target = values["state_machine_target"]
    # The ARNs the emulator returned, not ones derived from region + account.
    params = render_params(target, values, arns=_activity_arns(values, activity_arns))
    sm = spec.state_machine
    out[sm.name] = _ensure_state_machine(sfn, sm.name, sm.role, render_state_machine(target, params))
    return out


def botocore_client_factory(endpoint_url: str | None, region: str) -> ClientFactory:
    """Client factory on plain botocore (what the emulator container's Python has).

    Credentials come from botocore's usual chain (the hook's environment)."""
    import botocore.session

    session = botocore.session.get_session()

    def make(service: str) -> Any:
        return session.create_client(service, region_name=region, endpoint_url=endpoint_url)

    return make
