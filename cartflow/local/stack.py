"""The embedded stack: emulator + resources + every component as a local process.

Used by `cartflow demo`, `cartflow up` and the integration tests. Components run as
separate processes (`python -m cartflow serve <name>`), like containers or Lambdas would:
no shared memory, only the AWS APIs between them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cartflow.core.aws import AwsClients
from cartflow.core.config import Settings
from cartflow.infra import apply_resources
from cartflow.local.emulator import EmulatorProcess, free_port, is_healthy, port_is_free, start_emulator

COMPONENTS = ("ingest", "stream-trigger", "debouncer", "controller", "spark-runner")


def settings_env(settings: Settings) -> dict[str, str]:
    """Settings -> CARTFLOW_* variables, so child processes build the same Settings."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        env[f"CARTFLOW_{name.upper()}"] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return env


@dataclass
class EmbeddedStack:
    settings: Settings
    components: tuple[str, ...] = COMPONENTS
    emulator: EmulatorProcess | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.settings.state_dir / "logs"

    def start(self) -> EmbeddedStack:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        endpoint = self.settings.aws_endpoint_url
        if endpoint is None or not is_healthy(endpoint):
            port = self.settings.emulator_port if port_is_free(self.settings.emulator_port) else free_port()
            self.emulator = start_emulator(self.settings, port=port, log_dir=self.log_dir)
            self.settings = self.settings.model_copy(update={"aws_endpoint_url": self.emulator.endpoint})
        apply_resources(self.settings, AwsClients(self.settings))
        for name in self.components:
            self._spawn(name)
        return self

    def _spawn(self, name: str) -> None:
        env = {**os.environ, **settings_env(self.settings)}
        env.setdefault("AWS_ACCESS_KEY_ID", "test")  # the emulator's dummy credentials
        env.setdefault("AWS_SECRET_ACCESS_KEY", "test")
        log = (self.log_dir / f"{name}.log").open("ab")
        self._logs.append(log)
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "cartflow", "serve", name],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        """SIGKILL a component and its children (a JVM included): a crash, not a shutdown."""
        proc = self.processes[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def restart(self, name: str) -> None:
        """Start a killed (or exited) component again, as a container restart policy would."""
        if self.processes[name].poll() is None:
            raise RuntimeError(f"component {name} is still running")
        self._spawn(name)

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise RuntimeError(f"component {name} exited with {proc.returncode}; see {self.log_dir / (name + '.log')}")

    def stop(self, timeout: float = 20.0) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.processes.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log in self._logs:
            log.close()
        if self.emulator:
            self.emulator.stop()

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
