"""`cartflow images build|push`: the commands over cartflow.infra.images."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from cartflow.cli.choices import Image
from cartflow.infra import images

images_app = typer.Typer(help="Build and push the container images", no_args_is_help=True)

OnlyOpt = Annotated[list[Image] | None, typer.Option("--only", help="one image (repeatable); default: all")]


def _names(only: list[Image] | None) -> list[str] | None:
    return [i.value for i in only] if only else None


@images_app.command("build")
def build_cmd(
    only: OnlyOpt = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="tags (repeatable); default: git sha + version")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="build without the layer cache")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no build log")] = False,
) -> None:
    """Build every image, tagged with the git sha and the pyproject version."""
    try:
        built = images.build_images(_names(only), tag, no_cache=no_cache, echo=not quiet)
    except images.ImageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    for b in built:
        for ref in b.refs():
            typer.echo(ref)


@images_app.command("push")
def push_cmd(
    registry: Annotated[
        str, typer.Option(help="HOST, HOST:PORT or HOST/PREFIX, e.g. 123456789012.dkr.ecr.eu-west-1.amazonaws.com/team")
    ],
    only: OnlyOpt = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="tags (repeatable); default: git sha + version")] = None,
    create_repositories: Annotated[bool, typer.Option(help="ECR: create missing repositories")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the pushed references and digests as JSON")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no build log")] = False,
) -> None:
    """Build, tag (git sha + version) and push every image; ECR logins via boto3."""
    try:
        built = images.build_images(_names(only), tag, echo=not quiet)
        pushed = images.push_images(built, registry, create_repositories=create_repositories, echo=not quiet)
    except images.ImageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(json.dumps([asdict(p) | {"by_digest": p.by_digest} for p in pushed], indent=2))
    else:
        for p in pushed:
            typer.echo(f"{p.reference} {p.digest}")
