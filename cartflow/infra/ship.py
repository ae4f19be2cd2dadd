"""`cartflow deploy`: push the images, then create/update the CloudFormation stack by change set.

    cartflow deploy --stack cartflow --region eu-west-1             # build, push, deploy, wait
    cartflow deploy --stack cartflow --region eu-west-1 --dry-run   # the same, but only print the change set

Steps (docs/deploy.md): caller identity -> images (build + push to ECR with cartflow/infra/images.py,
or ``--image-uri services=... --image-uri spark=...``) -> network (``--vpc-id/--subnet-id``, or the
default VPC) -> template (cartflow/infra/cloudformation.py), uploaded to the artifact bucket
(cartflow/infra/artifacts.py: it is over CloudFormation's inline limit) -> change set with the
images *by digest* -> print -> execute and wait (or delete it, and the empty stack of a first dry run).

Credentials come from boto3's usual chain; ``--endpoint-url`` points every client at an
emulator (what the integration test does). The typer command is in cartflow/cli/deploy.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from cartflow.core.config import Settings
from cartflow.core.exceptions import CartflowError
from cartflow.infra import artifacts
from cartflow.infra.cloudformation import TemplateOptions, build_template, template_body

console = Console()
CAPABILITIES = ["CAPABILITY_IAM"]  # roles get generated names: no CAPABILITY_NAMED_IAM
_DIGEST_URI = re.compile(r"^(?P<repo>[^@\s]+)@sha256:[a-f0-9]{64}$")
_ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr(?:-fips)?\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?$")
_NO_CHANGES = ("didn't contain changes", "No updates are to be performed", "no changes")


class DeployError(CartflowError, RuntimeError):
    """Something the user can fix; the message says what."""


@dataclass
class DeployRequest:
    stack: str
    region: str
    dry_run: bool = False
    endpoint_url: str | None = None
    bucket: str | None = None  # default: <spec bucket>-<account>-<region> (S3 names are global)
    image_uris: dict[str, str] = field(default_factory=dict)  # services/spark -> repo@sha256:...
    registry: str | None = None  # default: this account's ECR in --region
    vpc_id: str | None = None
    subnet_ids: list[str] = field(default_factory=list)
    assign_public_ip: bool = True
    parameters: dict[str, str] = field(default_factory=dict)  # extra template parameters
    timeout_seconds: float = 3600.0
    artifact_bucket: str | None = None  # default: cartflow-deploy-<account>-<region>


@dataclass
class ChangeSet:
    stack: str
    name: str
    change_set_type: str  # CREATE | UPDATE
    status: str
    reason: str
    changes: list[dict[str, Any]]
    parameters: dict[str, str]

    @property
    def empty(self) -> bool:
        return self.status == "FAILED" and any(m in self.reason for m in _NO_CHANGES)


# ----------------------------------------------------------------------------- steps


def _clients(request: DeployRequest) -> Any:
    import boto3

    session = boto3.session.Session(region_name=request.region)

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=request.endpoint_url)

    return client


def _repository(uri: str) -> str | None:
    """ECR repository name of an image URI by digest (None outside ECR)."""
    m = _DIGEST_URI.match(uri)
    if not m:
        raise DeployError(f"image {uri!r} is not pinned by digest (expected <repository>@sha256:<64 hex>)")
    host, _, path = m["repo"].partition("/")
    return path if _ECR_HOST.match(host) else None


def push_images(request: DeployRequest, account: str) -> dict[str, str]:
    """``{services|spark: repo@sha256:...}``: the given URIs, or build + push both images now."""
    from cartflow.infra import images

    missing = [n for n in images.IMAGES if n not in request.image_uris]
    if not missing:
        return dict(request.image_uris)
    registry = request.registry or f"{account}.dkr.ecr.{request.region}.amazonaws.com"
    console.print(f"building and pushing {', '.join(missing)} to {registry}")
    try:
        built = images.build_images(missing, echo=False)
        pushed = images.push_images(built, registry, create_repositories=True, echo=True)
    except images.ImageError as exc:
        raise DeployError(f"image build/push failed: {exc}") from exc
    uris = dict(request.image_uris)
    for p in pushed:  # every tag of one image has the same digest; keep the first
        uris.setdefault(p.name, p.by_digest)
    return uris


def network(request: DeployRequest, ec2: Any) -> tuple[str, list[str]]:
    """(VPC id, subnet ids): as given, or the default VPC and its default subnets."""
    if request.vpc_id and request.subnet_ids:
        return request.vpc_id, list(request.subnet_ids)
    vpc_id = request.vpc_id
    if not vpc_id:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise DeployError("no default VPC in this region: pass --vpc-id and --subnet-id")
        vpc_id = vpcs[0]["VpcId"]
    subnets = request.subnet_ids or [
        s["SubnetId"] for s in ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    ]
    if not subnets:
        raise DeployError(f"VPC {vpc_id} has no subnets: pass --subnet-id")
    return vpc_id, sorted(subnets)


def stack_parameters(
    request: DeployRequest, account: str, uris: Mapping[str, str], vpc_id: str, subnets: Iterable[str], settings: Settings
) -> dict[str, str]:
    params = {
        "BucketName": request.bucket or f"{settings.bucket}-{account}-{request.region}",
        "ServicesImageUri": uris["services"],
        "SparkImageUri": uris["spark"],
        "VpcId": vpc_id,
        "SubnetIds": ",".join(subnets),
    }
    return {**params, **request.parameters}


def _stack_exists(cfn: Any, stack: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        status = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return False
        raise
    # A first dry run (or a failed first create) leaves nothing deployed: create again.
    return status not in ("REVIEW_IN_PROGRESS",)


def create_change_set(cfn: Any, stack: str, template_url: str, params: Mapping[str, str], timeout: float = 600.0) -> ChangeSet:
    kind = "UPDATE" if _stack_exists(cfn, stack) else "CREATE"
    name = f"cartflow-{time.strftime('%Y%m%d-%H%M%S')}"
    cfn.create_change_set(
        StackName=stack,
        ChangeSetName=name,
        ChangeSetType=kind,
        TemplateURL=template_url,
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
        Capabilities=CAPABILITIES,
        Description="cartflow deploy",
    )
    deadline = time.monotonic() + timeout
    while True:
        desc = cfn.describe_change_set(StackName=stack, ChangeSetName=name)
        status = desc["Status"]
        if status in ("CREATE_COMPLETE", "FAILED"):
            break
        if time.monotonic() > deadline:
            raise DeployError(f"change set {name} still {status} after {timeout:.0f}s")
        time.sleep(2)
    changes = list(desc.get("Changes", []))
    token = desc.get("NextToken")
    while token:
        page = cfn.describe_change_set(StackName=stack, ChangeSetName=name, NextToken=token)
        changes += page.get("Changes", [])
        token = page.get("NextToken")
    return ChangeSet(stack, name, kind, status, desc.get("StatusReason", ""), changes, dict(params))


def change_table(cs: ChangeSet) -> Table:
    t = Table(title=f"change set {cs.name} ({cs.change_set_type} stack {cs.stack})")
    for col in ("action", "logical id", "type", "replacement", "physical id"):
        t.add_column(col, overflow="fold")
    colors = {"Add": "green", "Modify": "yellow", "Remove": "red"}
    for change in cs.changes:
        rc = change.get("ResourceChange", {})
        action = rc.get("Action", "")
        t.add_row(
            f"[{colors.get(action, 'white')}]{action}",
            rc.get("LogicalResourceId", ""),
            rc.get("ResourceType", ""),
            str(rc.get("Replacement", "")),
            rc.get("PhysicalResourceId", ""),
        )
    return t


def parameter_table(params: Mapping[str, str]) -> Table:
    t = Table(title="parameters")
    t.add_column("name")
    t.add_column("value", overflow="fold")
    for k, v in params.items():
        t.add_row(k, v)
    return t


def discard(cfn: Any, cs: ChangeSet) -> None:
    """Delete a change set that will not run; a CREATE one also leaves an empty stack behind."""
    cfn.delete_change_set(StackName=cs.stack, ChangeSetName=cs.name)
    if cs.change_set_type == "CREATE":
        cfn.delete_stack(StackName=cs.stack)


class StackEvents:
    """The stack's events not printed yet (``describe_stack_events`` pages newest first)."""

    def __init__(self, cfn: Any, stack: str) -> None:
        self.cfn, self.stack = cfn, stack
        self.seen: set[str] = set()
        # What happened before this deploy is history: only events after it are new.
        self.seen.update(str(e.get("EventId")) for e in self._newest_first(max_pages=1))

    def _newest_first(self, max_pages: int = 5) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StackName": self.stack}
        for _ in range(max_pages):
            page = self.cfn.describe_stack_events(**kwargs)
            events = page.get("StackEvents", [])
            out += events
            if not page.get("NextToken") or any(str(e.get("EventId")) in self.seen for e in events):
                break
            kwargs["NextToken"] = page["NextToken"]
        return out

    def new(self) -> list[dict[str, Any]]:
        fresh = [e for e in self._newest_first() if str(e.get("EventId")) not in self.seen]
        self.seen.update(str(e.get("EventId")) for e in fresh)
        return list(reversed(fresh))  # oldest first, as they happened


def event_line(event: Mapping[str, Any]) -> str:
    """'12:00:01 CREATE_COMPLETE AWS::S3::Bucket DataBucket: reason' (time as CloudFormation gave it)."""
    stamp = event.get("Timestamp")
    when = stamp.strftime("%H:%M:%S") if isinstance(stamp, datetime) else str(stamp or "")
    reason = event.get("ResourceStatusReason")
    line = f"{when} {event.get('ResourceStatus', '')} {event.get('ResourceType', '')} {event.get('LogicalResourceId', '')}"
    return f"{line}: {reason}" if reason else line


def execute(cfn: Any, cs: ChangeSet, timeout: float, poll_seconds: float = 5.0) -> dict[str, str]:
    """Run the change set, wait for the stack while printing its events; returns its outputs
    (failure reasons on error)."""
    events = StackEvents(cfn, cs.stack)
    cfn.execute_change_set(StackName=cs.stack, ChangeSetName=cs.name)
    done = {"CREATE_COMPLETE", "UPDATE_COMPLETE"}
    deadline = time.monotonic() + timeout
    while True:
        stack = cfn.describe_stacks(StackName=cs.stack)["Stacks"][0]
        status = stack["StackStatus"]
        for event in events.new():  # after the status: a stack that just ended shows its last events too
            console.print(event_line(event), highlight=False, markup=False, soft_wrap=True)
        if status in done:
            return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        if status.endswith(("_COMPLETE", "_FAILED")):
            raise DeployError(f"stack {cs.stack} ended {status}: {'; '.join(failure_reasons(cfn, cs.stack))}")
        if time.monotonic() > deadline:
            raise DeployError(f"stack {cs.stack} still {status} after {timeout:.0f}s")
        time.sleep(poll_seconds)


def failure_reasons(cfn: Any, stack: str, limit: int = 10) -> list[str]:
    events = cfn.describe_stack_events(StackName=stack).get("StackEvents", [])
    failed = [e for e in events if str(e.get("ResourceStatus", "")).endswith("_FAILED")]
    return [f"{e['LogicalResourceId']}: {e.get('ResourceStatusReason', '')}" for e in failed[:limit]]


def deploy(request: DeployRequest, settings: Settings | None = None) -> ChangeSet:
    """The whole command; returns the change set (executed unless dry run)."""
    clients = _clients(request)
    account = str(clients("sts").get_caller_identity()["Account"])
    settings = (settings or Settings()).model_copy(update={"region": request.region, "account_id": account})
    uris = push_images(request, account)
    for uri in uris.values():
        _repository(uri)  # validates the digest pin
    vpc_id, subnets = network(request, clients("ec2"))
    options = TemplateOptions(assign_public_ip=request.assign_public_ip, spark_repository=_repository(uris["spark"]))
    body = template_body(build_template(settings, options))
    params = stack_parameters(request, account, uris, vpc_id, subnets, settings)
    bucket = request.artifact_bucket or artifacts.default_bucket(account, request.region)
    try:
        url = artifacts.upload_template(clients("s3"), bucket, request.stack, body, request.region, request.endpoint_url)
    except artifacts.ArtifactError as exc:
        raise DeployError(str(exc)) from exc
    console.print(f"template ({len(body.encode())} bytes): {url}", highlight=False)
    cfn = clients("cloudformation")
    cs = create_change_set(cfn, request.stack, url, params)
    console.print(parameter_table(params))
    if cs.empty:
        console.print(f"stack {request.stack} is up to date: nothing to change")
        discard(cfn, cs)
        return cs
    if cs.status != "CREATE_COMPLETE":
        raise DeployError(f"change set {cs.name} {cs.status}: {cs.reason}")
    console.print(change_table(cs))
    if request.dry_run:
        discard(cfn, cs)
        console.print(f"dry run: change set {cs.name} deleted, nothing deployed")
        return cs
    outputs = execute(cfn, cs, request.timeout_seconds)
    console.print(f"stack {request.stack} deployed")
    console.print_json(json.dumps(outputs))
    return cs
