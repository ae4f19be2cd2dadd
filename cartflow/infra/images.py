"""The container images: built, tagged and pushed with the Docker SDK (`cartflow images build|push`).

Two images, both built from the repo root (``.dockerignore`` trims the context):

* ``cartflow-services`` (services/Dockerfile): the functions' runners and the seeder;
* ``cartflow-spark`` (spark/Dockerfile): the Spark jobs (the ECS Fargate task as-is),
  the standalone master/worker and the spark-runner of the compose stack.

Each build is tagged with the git sha (``-dirty`` when the work tree has changes, so a
pushed tag never claims a commit it does not match) and the pyproject version.
``push --registry HOST[/prefix]`` retags them as ``HOST[/prefix]/cartflow-<name>:<tag>``
and pushes; for ECR (``<account>.dkr.ecr.<region>.amazonaws.com``) it logs in first with
``ecr:GetAuthorizationToken`` through boto3's usual credential chain (no secret is ever
read from cartflow settings or written to disk; the token only lives in this process).

The typer commands are in cartflow/cli/images.py; ``cartflow deploy`` (cartflow/infra/ship.py)
calls these functions directly.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cartflow.core.exceptions import CartflowError

# image name -> Dockerfile (relative to the build context, the repo root)
IMAGES: dict[str, str] = {
    "services": "services/Dockerfile",
    "spark": "spark/Dockerfile",
}
REPOSITORY_PREFIX = "cartflow-"

_ECR_RE = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


class ImageError(CartflowError, RuntimeError):
    """A build or push reported an error."""


def checkout(root: Path | None = None) -> Path:
    """The build context: a cartflow checkout (the current directory unless given).

    Images are built from source, so this is the one command that needs a checkout; the
    installed package never looks for one next to itself.
    """
    root = (root or Path.cwd()).resolve()
    missing = [f for f in IMAGES.values() if not (root / f).is_file()]
    if missing:
        raise ImageError(f"{root} is not a cartflow checkout (no {', '.join(missing)}): run this from the repository root")
    return root


@dataclass(frozen=True)
class BuiltImage:
    name: str  # "services" | "spark"
    repository: str  # local repository, e.g. "cartflow-services"
    image_id: str
    tags: tuple[str, ...]

    def refs(self) -> list[str]:
        return [f"{self.repository}:{t}" for t in self.tags]


@dataclass(frozen=True)
class PushedImage:
    name: str
    reference: str  # registry/prefix/repository:tag
    digest: str  # sha256:...

    @property
    def by_digest(self) -> str:
        return f"{self.reference.rsplit(':', 1)[0]}@{self.digest}"


# ----------------------------------------------------------------------------- metadata


def project_version(root: Path | None = None) -> str:
    pyproject = checkout(root) / "pyproject.toml"
    if pyproject.is_file():
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    from importlib.metadata import version

    return version("cartflow")


def git_sha(root: Path | None = None) -> str:
    """Short commit id, with ``-dirty`` when tracked or untracked files differ from it."""
    root = checkout(root)

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout.strip()

    try:
        sha = git("rev-parse", "--short=12", "HEAD")
        dirty = bool(git("status", "--porcelain"))
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ImageError(f"cannot read the git commit of {root}: {exc}") from exc
    return f"{sha}-dirty" if dirty else sha


def default_tags(root: Path | None = None) -> tuple[str, ...]:
    return (git_sha(root), project_version(root))


def select(only: Iterable[str] | None) -> list[str]:
    names = list(only) if only else list(IMAGES)
    unknown = [n for n in names if n not in IMAGES]
    if unknown:
        raise ImageError(f"unknown image(s) {unknown}; known: {', '.join(IMAGES)}")
    return names


# ----------------------------------------------------------------------------- docker


def docker_client() -> Any:
    import docker  # the `docker` package (test extra / dev tooling), imported on use

    # The SDK is untyped, and mypy resolves `docker` to the repository's docker/ folder (a namespace package).
    return docker.from_env(timeout=600)  # type: ignore[attr-defined]  # version=None -> negotiated with the engine


def _log(text: str) -> None:
    # Progress goes to stderr, so stdout stays the command's result (refs, digests, JSON).
    sys.stderr.write(text)
    sys.stderr.flush()


def _consume(stream: Iterator[Mapping[str, Any]], echo: bool) -> list[Mapping[str, Any]]:
    """Drain a build/push JSON stream; raise on the first error it reports."""
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        if "error" in chunk or "errorDetail" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk.get("error")
            raise ImageError(str(detail).strip())
        if echo and chunk.get("stream"):
            _log(chunk["stream"])
    return chunks


def build_images(
    only: Iterable[str] | None = None,
    tags: Iterable[str] | None = None,
    *,
    root: Path | None = None,
    no_cache: bool = False,
    echo: bool = False,
    client: Any = None,
) -> list[BuiltImage]:
    """Build every (or the selected) image and tag it locally as ``cartflow-<name>:<tag>``."""
    root = checkout(root)
    client = client or docker_client()
    tags = tuple(tags) if tags else default_tags(root)
    sha, version = git_sha(root), project_version(root)
    built = []
    for name in select(only):
        repository = REPOSITORY_PREFIX + name
        started = time.monotonic()
        _log(f"building {repository}:{tags[0]} from {IMAGES[name]} ...\n")  # one line per image, log or not
        stream = client.api.build(
            path=str(root),
            dockerfile=IMAGES[name],
            tag=f"{repository}:{tags[0]}",
            rm=True,
            forcerm=True,
            nocache=no_cache,
            decode=True,
            labels={
                "org.opencontainers.image.title": repository,
                "org.opencontainers.image.revision": sha,
                "org.opencontainers.image.version": version,
            },
        )
        chunks = _consume(stream, echo)
        image_id = next((c["aux"]["ID"] for c in reversed(chunks) if isinstance(c.get("aux"), dict) and "ID" in c["aux"]), None)
        image = client.images.get(image_id or f"{repository}:{tags[0]}")
        for tag in tags[1:]:
            image.tag(repository, tag)
        built.append(BuiltImage(name=name, repository=repository, image_id=image.id, tags=tags))
        _log(f"built {repository}:{tags[0]} in {time.monotonic() - started:.0f} s\n")
    return built


def split_registry(registry: str) -> tuple[str, str]:
    """``HOST[:port][/prefix]`` -> (host, prefix without slashes)."""
    registry = registry.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
    if not registry:
        raise ImageError("empty --registry")
    host, _, prefix = registry.partition("/")
    return host, prefix.strip("/")


def ecr_auth(host: str, session: Any = None) -> dict[str, str] | None:
    """Docker auth config for an ECR registry host; None for any other registry."""
    match = _ECR_RE.match(host)
    if not match:
        return None
    import boto3

    session = session or boto3.session.Session()
    ecr = session.client("ecr", region_name=match["region"])
    data = ecr.get_authorization_token(registryIds=[match["account"]])["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return {"username": user, "password": password, "serveraddress": data.get("proxyEndpoint", f"https://{host}")}


def ensure_ecr_repositories(host: str, repositories: Iterable[str], session: Any = None) -> None:
    """ECR needs a repository before a push; create the missing ones (immutable tags off)."""
    match = _ECR_RE.match(host)
    if not match:
        return
    import boto3

    ecr = (session or boto3.session.Session()).client("ecr", region_name=match["region"])
    for repo in repositories:
        try:
            ecr.describe_repositories(registryId=match["account"], repositoryNames=[repo])
        except ecr.exceptions.RepositoryNotFoundException:
            ecr.create_repository(repositoryName=repo, imageScanningConfiguration={"scanOnPush": True})


def push_images(
    built: Iterable[BuiltImage],
    registry: str,
    *,
    client: Any = None,
    create_repositories: bool = False,
    echo: bool = False,
) -> list[PushedImage]:
    """Retag each built image under ``registry`` and push every tag; returns the digests."""
    client = client or docker_client()
    host, prefix = split_registry(registry)
    built = list(built)
    target_repos = {b.name: "/".join(p for p in (host, prefix, b.repository) if p) for b in built}
    if create_repositories:
        ensure_ecr_repositories(host, ["/".join(p for p in (prefix, b.repository) if p) for b in built])
    auth = ecr_auth(host)
    pushed = []
    for b in built:
        image = client.images.get(b.image_id)
        target = target_repos[b.name]
        for tag in b.tags:
            image.tag(target, tag)
            stream = client.api.push(target, tag=tag, stream=True, decode=True, auth_config=auth)
            chunks = _consume(stream, echo=False)
            digest = next(
                (c["aux"]["Digest"] for c in chunks if isinstance(c.get("aux"), dict) and "Digest" in c["aux"]),
                None,
            )
            if not digest:
                raise ImageError(f"push of {target}:{tag} reported no digest")
            pushed.append(PushedImage(name=b.name, reference=f"{target}:{tag}", digest=digest))
            if echo:
                _log(f"pushed {target}:{tag} {digest}\n")
    return pushed
