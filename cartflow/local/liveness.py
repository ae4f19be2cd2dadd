"""Liveness files for the local runners, read by container healthchecks.

A runner touches ``<state_dir>/<name>.alive`` on every loop iteration; a healthcheck calls
``is_alive`` (or ``python -m cartflow.local.liveness PATH MAX_AGE``) and fails when the file
is older than ``max_age_s``. Pick ``max_age_s`` above the longest single loop iteration
(e.g. the SQS long-poll wait plus a handler's timeout), or a busy runner looks dead.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cartflow.core.config import Settings

log = logging.getLogger(__name__)


class Liveness:
    """The liveness file of one named runner."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.path = Path(settings.state_dir) / f"{name}.alive"

    def touch(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
            # touch() on an existing file only updates the mtime when the platform says so.
            os.utime(self.path)
        except OSError:
            # A full/readonly disk must not stop event processing; the healthcheck will notice.
            log.warning("cannot touch liveness file %s", self.path, exc_info=True)


class BusyMarker:
    """``<state_dir>/<name>.busy`` exists while a runner holds work (a counted marker: several
    threads may hold work at once). Its supervisor reads it to tell an idle runner, whose
    stop need not wait, from one that must finish and report first."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.path = Path(settings.state_dir) / f"{name}.busy"
        self._held = 0
        self._lock = threading.Lock()

    @contextmanager
    def holding(self) -> Iterator[None]:
        with self._lock:
            self._held += 1
            self._write()
        try:
            yield
        finally:
            with self._lock:
                self._held -= 1
                if self._held == 0:
                    self.path.unlink(missing_ok=True)

    def _write(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(str(self._held))
        except OSError:  # as for Liveness: a full disk only makes the stop wait longer
            log.warning("cannot write busy marker %s", self.path, exc_info=True)


def is_alive(path: str | os.PathLike[str], max_age_s: float) -> bool:
    """True when ``path`` exists and was touched within the last ``max_age_s`` seconds."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return False
    return time.time() - mtime <= max_age_s


def terminate(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM a child we started, SIGKILL it when it is still there after ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def pid_alive(pid: int) -> bool:
    """True when process ``pid`` exists and is not a zombie (exited, not yet reaped)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return _proc_state(pid) != "Z"


def group_pids(pgid: int) -> list[int]:
    """Live (non-zombie) members of process group ``pgid``: a component and its children (a JVM)."""
    proc = Path("/proc")
    if not proc.is_dir():  # no procfs (macOS): probe the group as a whole
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return sorted(members)


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, ... (None without it)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()  # the name may contain spaces and parentheses


def process_token(pid: int) -> str | None:
    """What tells this process from a later one that reuses its pid: its start time (None without procfs)."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def _proc_state(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[0] if fields else None


def main(argv: list[str] | None = None) -> int:
    """Healthcheck entry point: exit 0 when alive, 1 otherwise."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m cartflow.local.liveness PATH MAX_AGE_SECONDS\n")
        return 2
    return 0 if is_alive(args[0], float(args[1])) else 1


if __name__ == "__main__":
    raise SystemExit(main())
