"""Run MiniStack as a local process (embedded mode and integration tests).

MiniStack pins its own botocore, so it lives in a virtualenv of its own, created on first
use from PyPI. The process binds 127.0.0.1 only.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cartflow.core.config import Settings
from cartflow.core.exceptions import CartflowError


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


def ensure_ministack(settings: Settings) -> Path:
    """The ministack executable, installing the pinned version into its venv if needed."""
    venv = settings.emulator_venv
    exe = venv / "bin" / "ministack"
    marker = venv / f".ministack-{settings.ministack_version}"
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
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def start_emulator(
    settings: Settings, port: int | None = None, log_dir: Path | None = None, timeout: float = 60.0
) -> EmulatorProcess:
    exe = ensure_ministack(settings)
    port = port or settings.emulator_port
    endpoint = f"http://127.0.0.1:{port}"
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
        "BIND_HOST": "127.0.0.1",
        "MINISTACK_REGION": settings.region,
        "S3_DATA_DIR": str(data_dir / "s3"),
        "LOG_LEVEL": "WARNING",
    }
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
