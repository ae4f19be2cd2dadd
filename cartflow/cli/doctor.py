"""`cartflow doctor`: is this machine ready to run cartflow? Each failing check prints its fix.

The checks are pure functions over facts (``Facts``) gathered once by ``gather``, so each
rule is unit-tested without the machine it describes. A required check that fails makes
the command exit 1; an optional one (Docker, compose) only warns.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cartflow.cli.context import console
from cartflow.core.config import Settings, get_settings

MIN_FREE_BYTES = 2 * 1024**3
JAVA_MAJOR = 17
OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | FAIL
    detail: str
    fix: str | None = None  # the command (or step) that fixes it


@dataclass
class Facts:
    """What the checks look at; ``gather`` reads them from this machine."""

    java_version_output: str | None  # `java -version` (stderr), None when java is not on PATH
    docker_engine: str | None  # the server version, None when no engine answers
    docker_error: str | None
    compose: str | None  # "docker compose" / "docker-compose" version line, None when absent
    port: int
    port_free: bool
    port_owner: str | None  # "cartflow stack (pid N)" when our stack holds it
    endpoint: str | None
    endpoint_healthy: bool | None  # None when no endpoint is configured
    jars_dir: Path
    jars_missing: list[str] = field(default_factory=list)
    jars_total: int = 0
    credentials: bool = False
    state_dir: Path = Path()
    free_bytes: int = 0


def java_major(output: str | None) -> int | None:
    """17 from 'openjdk version "17.0.15" ...' (and 8 from '"1.8.0_392"')."""
    if not output:
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def check_java(f: Facts) -> Check:
    fix = "install a Java 17 runtime (e.g. `sudo apt-get install openjdk-17-jre-headless`) and put `java` on PATH"
    if f.java_version_output is None:
        return Check("java", FAIL, "java not found on PATH", fix)
    major = java_major(f.java_version_output)
    first = f.java_version_output.strip().splitlines()[0] if f.java_version_output.strip() else "no output"
    if major != JAVA_MAJOR:
        return Check("java", FAIL, f"need Java {JAVA_MAJOR} for Spark, found: {first}", fix + " (or set JAVA_HOME to it)")
    return Check("java", OK, first)


def check_docker(f: Facts) -> Check:
    if f.docker_engine is None:
        reason = f.docker_error or "no Docker engine answers"
        return Check(
            "docker",
            WARN,
            f"{reason} (only `docker compose up`, images and e2e tests need it)",
            "start Docker: `sudo systemctl start docker`",
        )
    return Check("docker", OK, f"engine {f.docker_engine}")


def check_compose(f: Facts) -> Check:
    if f.compose is None:
        return Check(
            "compose",
            WARN,
            "neither `docker compose` nor `docker-compose` found",
            "install the compose plugin: `sudo apt-get install docker-compose-plugin`",
        )
    return Check("compose", OK, f.compose)


def check_port(f: Facts) -> Check:
    if f.port_free:
        return Check("port", OK, f"{f.port} is free")
    if f.port_owner:
        return Check("port", OK, f"{f.port} is held by our {f.port_owner}")
    return Check(
        "port",
        FAIL,
        f"{f.port} is taken by another process",
        f"stop it (`lsof -i :{f.port}`), or use another port: `CARTFLOW_EMULATOR_PORT=4567 cartflow up`",
    )


def check_endpoint(f: Facts) -> Check:
    if f.endpoint is None:
        return Check("endpoint", OK, "not set: commands talk to real AWS (set CARTFLOW_AWS_ENDPOINT_URL for the emulator)")
    if f.endpoint_healthy:
        return Check("endpoint", OK, f"{f.endpoint} is healthy")
    return Check(
        "endpoint",
        FAIL,
        f"{f.endpoint} does not answer",
        "start the stack: `cartflow up --detach` (or `unset CARTFLOW_AWS_ENDPOINT_URL`)",
    )


def check_jars(f: Facts) -> Check:
    if f.jars_missing:
        n = len(f.jars_missing)
        return Check(
            "jars",
            FAIL,
            f"{n} of {f.jars_total} locked jars missing or not matching the lock in {f.jars_dir} (first: {f.jars_missing[0]})",
            "cartflow jars",
        )
    return Check("jars", OK, f"{f.jars_total} jars match the lock in {f.jars_dir}")


def check_credentials(f: Facts) -> Check:
    if f.credentials:
        return Check("credentials", OK, "found in the boto3 chain")
    if f.endpoint is not None:
        return Check("credentials", OK, "none set; the emulator accepts any (cartflow uses test/test)")
    return Check(
        "credentials",
        FAIL,
        "no AWS credentials in the boto3 chain (env, profile, role)",
        "`aws configure` (or export AWS_PROFILE=...), or point at the emulator: `export CARTFLOW_AWS_ENDPOINT_URL=http://127.0.0.1:4566`",
    )


def check_disk(f: Facts) -> Check:
    gib = f.free_bytes / 1024**3
    if f.free_bytes < MIN_FREE_BYTES:
        return Check(
            "disk",
            FAIL,
            f"{gib:.1f} GiB free in {f.state_dir} (need > {MIN_FREE_BYTES / 1024**3:.0f} GiB)",
            "free some space, or move the state: `export CARTFLOW_STATE_DIR=<a folder on a bigger disk>`",
        )
    return Check("disk", OK, f"{gib:.1f} GiB free in {f.state_dir}")


CHECKS = (check_java, check_docker, check_compose, check_port, check_endpoint, check_jars, check_credentials, check_disk)


def run_checks(f: Facts) -> list[Check]:
    return [check(f) for check in CHECKS]


# ----------------------------------------------------------------------------- the facts


def _run(cmd: list[str], timeout: float = 15.0) -> subprocess.CompletedProcess[str] | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _existing(path: Path) -> Path:
    """The path, or its nearest existing parent (the disk it will be on)."""
    path = path.expanduser().resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def gather(settings: Settings) -> Facts:
    import boto3

    from cartflow.local.emulator import is_healthy, nothing_listens
    from cartflow.local.stack import load_stack
    from spark import fetch_jars

    java = _run(["java", "-version"])
    docker = _run(["docker", "version", "--format", "{{.Server.Version}}"])
    docker_engine = docker.stdout.strip() if docker is not None and docker.returncode == 0 and docker.stdout.strip() else None
    docker_error = None
    if docker is None:
        docker_error = "docker not found on PATH"
    elif docker_engine is None:
        lines = (docker.stderr or docker.stdout).strip().splitlines()
        docker_error = lines[-1] if lines else "no Docker engine answers"
    compose = None
    for cmd in (["docker", "compose", "version", "--short"], ["docker-compose", "version", "--short"]):
        r = _run(cmd)
        if r is not None and r.returncode == 0 and r.stdout.strip():
            compose = f"{' '.join(cmd[:-2])} {r.stdout.strip()}"
            break
    port = settings.emulator_port
    free = nothing_listens(port)
    owner = None
    if not free:
        record = load_stack(settings, port)
        if record is not None and record.alive():
            owner = f"cartflow stack (pid {record.supervisor})"
    lock = fetch_jars.read_lock()
    missing = fetch_jars.check(settings.jars_dir)
    state = _existing(settings.state_dir)
    return Facts(
        java_version_output=(java.stderr or java.stdout) if java is not None else None,
        docker_engine=docker_engine,
        docker_error=docker_error,
        compose=compose,
        port=port,
        port_free=free,
        port_owner=owner,
        endpoint=settings.aws_endpoint_url,
        endpoint_healthy=is_healthy(settings.aws_endpoint_url, timeout=3.0) if settings.aws_endpoint_url else None,
        jars_dir=settings.jars_dir,
        jars_missing=[j.filename for j in missing],
        jars_total=len(lock),
        credentials=boto3.session.Session().get_credentials() is not None,
        state_dir=settings.state_dir,
        free_bytes=shutil.disk_usage(state).free,
    )


def doctor() -> None:
    """Check Java 17, Docker (optional), the port, the endpoint, the jars, credentials and disk; print each fix."""
    import typer

    checks = run_checks(gather(get_settings()))
    colors = {OK: "green", WARN: "yellow", FAIL: "red"}
    for c in checks:
        console.print(f"[{colors[c.status]}]{c.status:>4}[/] {c.name:<12} {c.detail}", highlight=False, soft_wrap=True)
        if c.fix and c.status != OK:
            console.print(f"     {'':<12} fix: {c.fix}", highlight=False, soft_wrap=True, markup=False)
    failed = [c.name for c in checks if c.status == FAIL]
    if failed:
        console.print(
            f"{len(failed)} required check{'s' if len(failed) != 1 else ''} failed: {', '.join(failed)}", highlight=False
        )
        raise typer.Exit(1)
    console.print("ready", highlight=False)
