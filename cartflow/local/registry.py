"""A throwaway image registry on 127.0.0.1: Debian's ``docker-registry`` with its storage in
a directory of its own.

The deployed stack pins its images by digest, as on ECR, and a ``repo@sha256:`` reference
only resolves for an image pushed to (or pulled from) a registry: `cartflow up --fidelity aws`
and the e2e tests push to this one. The engine talks plain HTTP to any 127.0.0.0/8 registry.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cartflow.core.exceptions import CartflowError
from cartflow.local.emulator import free_port
from cartflow.local.liveness import terminate

REGISTRY_BIN = "docker-registry"


class RegistryError(CartflowError, RuntimeError):
    pass


@dataclass
class RegistryProcess:
    address: str  # host:port, what image names start with
    process: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]

    def answers(self, timeout: float = 1.0) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/v2/", timeout=timeout):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        terminate(self.process, timeout)
        self._log.close()


def registry_binary() -> str:
    found = shutil.which(REGISTRY_BIN) or (f"/usr/bin/{REGISTRY_BIN}" if Path(f"/usr/bin/{REGISTRY_BIN}").exists() else None)
    if found is None:
        raise RegistryError(
            "Debian's docker-registry is not installed (apt-get install docker-registry); "
            "or pass --registry HOST[:PORT][/PREFIX] of a registry the Docker engine can push to"
        )
    return found


def start_registry(directory: Path, log_path: Path, port: int | None = None, timeout: float = 15.0) -> RegistryProcess:
    """A registry on 127.0.0.1:``port`` (a free one by default), its config and storage under ``directory``."""
    binary = registry_binary()
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    config = directory / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage:\n  filesystem:\n    rootdirectory: {directory / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = log_path.open("ab")
    proc = subprocess.Popen(
        [binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    registry = RegistryProcess(f"127.0.0.1:{port}", proc, log_path, log)
    deadline = time.monotonic() + timeout
    while not registry.answers():
        if proc.poll() is not None or time.monotonic() > deadline:
            registry.stop()
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RegistryError(f"the image registry did not start on 127.0.0.1:{port}: {tail[0]} (log: {log_path})")
        time.sleep(0.1)
    return registry
