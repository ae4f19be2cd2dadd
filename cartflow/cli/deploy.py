"""`cartflow deploy` and `cartflow deploy-template`: the commands over cartflow.infra.ship (docs/deploy.md)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Annotated

import typer

from cartflow.cli.context import console, err_console


def _pairs(items: Iterable[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise typer.BadParameter(f"{what} must be NAME=VALUE, got {item!r}")
        out[key] = value
    return out


def deploy_cmd(
    stack: Annotated[str, typer.Option(help="CloudFormation stack name")],
    region: Annotated[str, typer.Option(help="AWS region, e.g. eu-west-1")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the change set, then delete it")] = False,
    endpoint_url: Annotated[str | None, typer.Option(help="emulator endpoint for every client")] = None,
    bucket: Annotated[str | None, typer.Option(help="data bucket; default <bucket>-<account>-<region>")] = None,
    image_uri: Annotated[list[str] | None, typer.Option(help="services=URI / spark=URI by digest: skip build+push")] = None,
    registry: Annotated[
        str | None, typer.Option(help="push to a registry HOST or HOST/PREFIX; default this account's ECR")
    ] = None,
    vpc_id: Annotated[str | None, typer.Option(help="VPC of the Spark tasks; default: the default VPC")] = None,
    subnet_id: Annotated[list[str] | None, typer.Option(help="subnet (repeatable); default: the VPC's subnets")] = None,
    public_ip: Annotated[bool, typer.Option(help="Spark tasks get a public IP (public subnets, no NAT)")] = True,
    param: Annotated[list[str] | None, typer.Option(help="template parameter NAME=VALUE (repeatable)")] = None,
    artifact_bucket: Annotated[
        str | None, typer.Option(help="bucket for the template upload; default cartflow-deploy-<account>-<region>")
    ] = None,
) -> None:
    """Push the images and create/update the AWS stack (CloudFormation change set)."""
    from cartflow.infra.ship import DeployError, DeployRequest, deploy

    request = DeployRequest(
        stack=stack,
        region=region,
        dry_run=dry_run,
        endpoint_url=endpoint_url,
        bucket=bucket,
        image_uris=_pairs(image_uri, "--image-uri"),
        registry=registry,
        vpc_id=vpc_id,
        subnet_ids=list(subnet_id or []),
        assign_public_ip=public_ip,
        parameters=_pairs(param, "--param"),
        artifact_bucket=artifact_bucket,
    )
    # Where the stack goes, before anything is built or pushed.
    where = f"emulator {endpoint_url}" if endpoint_url else "AWS"
    err_console.print(f"target: {where}, region {region}, stack {stack}", highlight=False)
    try:
        deploy(request)
    except DeployError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc


def template_cmd(
    public_ip: Annotated[bool, typer.Option(help="Spark tasks get a public IP")] = True,
    spark_repository: Annotated[str, typer.Option(help="ECR repository of the Spark image ('' = not ECR)")] = "cartflow-spark",
) -> None:
    """Print the CloudFormation template (JSON) generated from the resource spec."""
    from cartflow.core.config import Settings
    from cartflow.infra.cloudformation import TemplateOptions, build_template

    options = TemplateOptions(assign_public_ip=public_ip, spark_repository=spark_repository or None)
    typer.echo(json.dumps(build_template(Settings(), options), indent=2))
