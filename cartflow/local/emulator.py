"""Run MiniStack as a local process (embedded mode and integration tests).

MiniStack pins its own botocore, so it lives in a virtualenv of its own, created on first
use from PyPI, with the Docker SDK beside it. By default the process binds 127.0.0.1 only and
runs no container (its Docker client is pointed at nothing). ``containers=True`` is the mode
a deployed stack needs (`cartflow deploy --endpoint-url`): MiniStack runs image functions
under the Lambda RIE and ECS tasks through the Docker socket, and binds the address of
Docker's default bridge, which those containers reach as host.docker.internal (MiniStack
maps it to host-gateway and sets it as their AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import closing, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cartflow.core.config import Settings
from cartflow.core.exceptions import CartflowError
from cartflow.local.liveness import terminate


class EmulatorError(CartflowError, RuntimeError):
    pass


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def nothing_listens(port: int) -> bool:
    """No socket listens on 127.0.0.1:``port`` (connections of a stopped server lingering in
    TIME_WAIT do not count: a server binding with SO_REUSEADDR, as the emulator does, can start)."""
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


# MiniStack's own [full] extra asks for docker>=7.0.0 (its ECS tasks and image functions).
DOCKER_SDK_VERSION = "7.2.0"  # the same as the project's [release] extra
# Where MiniStack's Docker client points when the emulator should run no container.
_NO_DOCKER = "unix:///nonexistent/cartflow-emulator-runs-no-containers.sock"


def ensure_ministack(settings: Settings) -> Path:
    """The ministack executable, installing the pinned version (and the Docker SDK) into its venv if needed."""
    venv = settings.emulator_venv
    exe = venv / "bin" / "ministack"
    marker = venv / f".ministack-{settings.ministack_version}-docker-{DOCKER_SDK_VERSION}"
    if exe.exists() and marker.exists():
        return exe
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Two processes may start an emulator at once (parallel test workers, two stacks): one
    # installs, the other waits for it instead of racing pip in the same virtualenv.
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if exe.exists() and marker.exists():
            return exe
        print(f"installing the emulator (ministack=={settings.ministack_version}) into {venv} ...", file=sys.stderr)
        if not (venv / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [
                str(venv / "bin" / "pip"),
                "install",
                "--quiet",
                "--disable-pip-version-check",
                f"ministack=={settings.ministack_version}",
                f"docker=={DOCKER_SDK_VERSION}",
            ],
            check=True,
        )
        marker.touch()
    return exe


def is_healthy(endpoint: str, timeout: float = 1.0) -> bool:
    if urllib.parse.urlsplit(endpoint).scheme not in ("http", "https"):
        return False  # not an emulator's URL: urlopen would refuse it, or read a local file:
    try:
        with urllib.request.urlopen(f"{endpoint}/_ministack/health", timeout=timeout) as resp:  # noqa: S310 - scheme checked above
            return bool(resp.status == 200)
    except OSError:
        return False


@dataclass
class EmulatorProcess:
    endpoint: str
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]

    def stop(self, timeout: float = 30.0) -> None:
        terminate(self.process, timeout)
        self._log.close()


def docker_gateway(docker: str = "docker") -> str:
    """The host's address on Docker's default bridge: what host-gateway resolves to in a container."""
    try:
        res = subprocess.run(
            [docker, "network", "inspect", "bridge", "--format", "{{range .IPAM.Config}}{{.Gateway}} {{.Subnet}}{{end}}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EmulatorError(f"cannot ask Docker for its bridge address: {exc}") from exc
    fields = res.stdout.split() if res.returncode == 0 else []
    gateways = [f for f in fields if "/" not in f and ":" not in f]
    subnets = [f for f in fields if "/" in f and ":" not in f]  # IPv4 only: the containers' host-gateway
    if gateways:
        return gateways[0]
    # A freshly started engine may report only the subnet; the bridge then holds its first
    # address (Docker's default for the gateway).
    for subnet in subnets:
        with suppress(ValueError, StopIteration):
            return str(next(ipaddress.ip_network(subnet, strict=False).hosts()))
    raise EmulatorError(f"Docker's default bridge has no address: {(res.stderr or res.stdout).strip() or 'none reported'}")


def start_emulator(
    settings: Settings,
    port: int | None = None,
    log_dir: Path | None = None,
    timeout: float = 60.0,
    *,
    containers: bool = False,
    docker: str = "docker",
) -> EmulatorProcess:
    """MiniStack on ``port``; ``containers``: with Docker, on the bridge address (see the module doc)."""
    exe = ensure_ministack(settings)
    port = port or settings.emulator_port
    host = docker_gateway(docker) if containers else "127.0.0.1"
    endpoint = f"http://{host}:{port}"
    if is_healthy(endpoint):
        raise EmulatorError(f"something already answers on {endpoint}; stop it or pick another port")
    log_dir = log_dir or settings.state_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    data_dir = log_dir / f"ministack-{port}"
    if not settings.emulator_persist:
        shutil.rmtree(data_dir, ignore_errors=True)
    log_path = log_dir / f"ministack-{port}.log"
    log = log_path.open("wb")
    env = {
        **os.environ,
        "GATEWAY_PORT": str(port),
        "BIND_HOST": host,
        "MINISTACK_REGION": settings.region,
        "S3_DATA_DIR": str(data_dir / "s3"),
        "LOG_LEVEL": "WARNING",
    }
    if not containers:
        env["DOCKER_HOST"] = _NO_DOCKER
    if settings.emulator_persist:
        # S3 objects are written through to disk; the other services' state is saved on a
        # clean shutdown (SIGTERM) and loaded at start.
        env.update(PERSIST_STATE="1", S3_PERSIST="1", STATE_DIR=str(data_dir / "state"))
    proc = subprocess.Popen([str(exe)], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    emu = EmulatorProcess(endpoint, proc, log_path, log)
    deadline = time.monotonic() + timeout
    while not is_healthy(endpoint):
        if proc.poll() is not None:
            emu.stop()
            raise EmulatorError(f"MiniStack exited with {proc.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            emu.stop()
            raise EmulatorError(f"MiniStack not healthy after {timeout}s; see {log_path}")
        time.sleep(0.2)
    return emu


def remove_containers(port: int, docker: str = "docker") -> int:
    """Remove the function and task containers a containers-mode emulator on ``port`` started
    (MiniStack labels them ``ministack.instance=<hostname>:<port>``); returns how many."""
    label = f"ministack.instance={socket.gethostname()}:{port}"
    try:
        ids = subprocess.run([docker, "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True, timeout=60)
        found = ids.stdout.split()
        if found:
            subprocess.run([docker, "rm", "-f", *found], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return 0  # no engine to ask: nothing of ours can run there either
    return len(found)


def docker_reachable(docker: str = "docker") -> None:
    """Raise a one-line EmulatorError unless the Docker engine answers."""
    try:
        res = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30)
        ok, why = res.returncode == 0, (res.stderr or res.stdout).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        ok, why = False, str(exc)
    if not ok:
        lines = why.splitlines()
        raise EmulatorError(f"Docker is not reachable through `{docker}`: {lines[-1] if lines else 'no answer'}")
