"""The embedded stack: emulator + resources + every component as a local process.

Used by `cartflow demo`, `cartflow up` and the integration tests. Components run as
separate processes (`python -m cartflow serve <name>`), like containers or Lambdas would:
no shared memory, only the AWS APIs between them.

Each stack keeps its state in a directory of its own, ``<state_dir>/stacks/<port>/``
(keyed by the emulator's port): the components' logs (``logs/``), liveness files and
stream checkpoints, and ``stack.json``, the record of every process it started (pid and
start time), which `cartflow down`, `logs` and `wait` read to find it. Two stacks on one
machine therefore share nothing.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cartflow.core.aws import AwsClients
from cartflow.core.config import Settings
from cartflow.core.exceptions import CartflowError
from cartflow.infra import apply_resources
from cartflow.local.emulator import (
    EmulatorProcess,
    free_port,
    is_healthy,
    nothing_listens,
    port_is_free,
    remove_containers,
    start_emulator,
)
from cartflow.local.liveness import BusyMarker, group_pids, pid_alive, process_token
from cartflow.local.spark_runner import LIVENESS_NAME as RUNNER

COMPONENTS = ("ingest", "stream-trigger", "debouncer", "controller", "spark-runner")
# embedded: the components as local processes; aws: the deployed template (cartflow.local.deployed).
FIDELITIES = ("embedded", "aws")
RECORD_NAME = "stack.json"
SUPERVISOR_LOG = "up.log"  # what a detached `cartflow up` prints
EMULATOR = "emulator"
DEPLOYMENT = "deployment"  # a deployed stack's liveness: its supervisor deployed the template
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


class StackError(CartflowError, RuntimeError):
    """The stack cannot start, or a process of it died; the message says what to do."""


class StopSignal(BaseException):  # BaseException: no `except Exception` on the way up swallows it
    """A stop signal (SIGTERM/SIGHUP/SIGINT) arrived: raised in the main thread so the
    ``with EmbeddedStack(...)`` block unwinds and stops every child."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


_STOPPING = threading.Event()  # a stack is stopping its processes: signals must not interrupt that


@contextlib.contextmanager
def stop_on_signals(signals: Iterable[signal.Signals] = STOP_SIGNALS) -> Iterator[None]:
    """Turn the first stop signal into ``StopSignal``; later ones (and any during a stop) are ignored."""
    fired = False

    def handler(signum: int, _frame: Any) -> None:
        nonlocal fired
        if fired or _STOPPING.is_set():
            return  # already on the way out: let the cleanup finish
        fired = True
        raise StopSignal(signum)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def settings_env(settings: Settings) -> dict[str, str]:
    """Settings -> CARTFLOW_* variables, so child processes build the same Settings."""
    env = {}
    for name, value in settings.model_dump(mode="json").items():
        if value is None:
            continue
        env[f"CARTFLOW_{name.upper()}"] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return env


# ----------------------------------------------------------------------------- where a stack lives


def stacks_root(settings: Settings) -> Path:
    return Path(settings.state_dir) / "stacks"


def stack_dir(settings: Settings, key: str | int) -> Path:
    return stacks_root(settings) / str(key)


def port_of(endpoint: str) -> int | None:
    try:
        parts = urllib.parse.urlsplit(endpoint)
        return parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None


def default_key(settings: Settings) -> str:
    """The stack a command means when not told: the one on the configured endpoint, else on the emulator port."""
    port = port_of(settings.aws_endpoint_url) if settings.aws_endpoint_url else None
    return str(port or settings.emulator_port)


def choose_port(settings: Settings) -> tuple[int, bool]:
    """(port, whether the stack starts its own emulator): a healthy configured endpoint is
    reused; otherwise the configured emulator port, or any free one when that is taken."""
    endpoint = settings.aws_endpoint_url
    if endpoint is not None and is_healthy(endpoint):
        port = port_of(endpoint)
        if port is not None:
            return port, False
    if port_is_free(settings.emulator_port):
        return settings.emulator_port, True
    if settings.emulator_persist:
        # The saved state lives under the port's stack directory: another port would start
        # empty. A stack that just stopped may hold the port for a moment.
        # TIME_WAIT connections of the stopped one do not count (the emulator binds with SO_REUSEADDR).
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if nothing_listens(settings.emulator_port):
                return settings.emulator_port, True
            time.sleep(0.5)
        raise StackError(
            f"port {settings.emulator_port} is taken and --persist keeps its state for that port: "
            f"stop what runs there (cartflow down --port {settings.emulator_port}) or pick the port with --port"
        )
    return free_port(), True


def free_stack_dir(settings: Settings, port: int) -> Path:
    """The stack directory of ``port``, unless a live stack holds it."""
    directory = stack_dir(settings, port)
    existing = StackRecord.load(directory / RECORD_NAME)
    if existing is not None and existing.alive():
        raise StackError(
            f"a cartflow stack already runs on port {port} (pid {existing.supervisor}): "
            f"use it, or stop it first with `cartflow down --port {port}`"
        )
    return directory


def reset_activities(settings: Settings, clients: AwsClients) -> None:
    """Delete the job activities of a restored emulator state, for apply_resources to create
    again: MiniStack 1.5.33 restores an activity but not its task queue, so the first task
    scheduled after a restart fails with States.Runtime (a KeyError on the activity)."""
    for name in (settings.validate_activity, settings.transform_activity):
        arn = settings.arn("states", f"activity:{name}")
        with contextlib.suppress(clients.sfn.exceptions.ActivityDoesNotExist):
            clients.sfn.delete_activity(activityArn=arn)


@dataclass
class StackRecord:
    """``stack.json``: the processes of one stack, as `down`, `logs` and `wait` find them."""

    key: str
    endpoint: str
    supervisor: int  # the process running the stack (`cartflow up`, `demo`, a test)
    started_at: float
    dir: Path
    emulator: tuple[int, str | None] | None = None  # (pid, start token); None: an emulator it did not start
    components: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    supervisor_token: str | None = None
    fidelity: str = "embedded"  # "aws": the deployed template in a containers-mode emulator (cartflow.local.deployed)

    @property
    def path(self) -> Path:
        return self.dir / RECORD_NAME

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def port(self) -> int | None:
        return port_of(self.endpoint)

    def groups(self) -> dict[str, tuple[int, str | None]]:
        """Every process group the stack started: the emulator and each component (with its JVM)."""
        return {**({EMULATOR: self.emulator} if self.emulator else {}), **self.components}

    def supervisor_alive(self) -> bool:
        return _same_process(self.supervisor, self.supervisor_token)

    def live_pids(self) -> dict[str, list[int]]:
        """Live processes of the stack by name (``supervisor`` + each group's members)."""
        out = {name: _our_group(pid, token) for name, (pid, token) in self.groups().items()}
        if self.supervisor_alive():
            out["supervisor"] = [self.supervisor]
        return {name: pids for name, pids in out.items() if pids}

    def alive(self) -> bool:
        return bool(self.live_pids())

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = {
            "key": self.key,
            "endpoint": self.endpoint,
            "supervisor": self.supervisor,
            "supervisor_token": self.supervisor_token,
            "started_at": self.started_at,
            "emulator": list(self.emulator) if self.emulator else None,
            "components": {name: list(v) for name, v in self.components.items()},
            "fidelity": self.fidelity,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path)  # readers never see half a record

    @classmethod
    def load(cls, path: Path) -> StackRecord | None:
        try:
            d = json.loads(path.read_text())
            emulator = d.get("emulator")
            return cls(
                key=str(d["key"]),
                endpoint=str(d["endpoint"]),
                supervisor=int(d["supervisor"]),
                supervisor_token=d.get("supervisor_token"),
                started_at=float(d["started_at"]),
                dir=path.parent,
                emulator=(int(emulator[0]), emulator[1]) if emulator else None,
                components={name: (int(v[0]), v[1]) for name, v in d.get("components", {}).items()},
                fidelity=str(d.get("fidelity", "embedded")),
            )
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None  # no record, or one a crash cut short: no stack to talk to


def _same_process(pid: int, token: str | None) -> bool:
    """``pid`` is alive and is still the process recorded (not a reused pid)."""
    return pid_alive(pid) and (token is None or process_token(pid) in (None, token))


def _our_group(pgid: int, token: str | None) -> list[int]:
    """Live members of a group the stack started. While any member lives the id cannot be
    reused, so the members are ours, unless the leader itself is a different process."""
    members = group_pids(pgid)
    if pgid in members and not _same_process(pgid, token):
        return []
    return members


def load_stack(settings: Settings, key: str | int) -> StackRecord | None:
    return StackRecord.load(stack_dir(settings, key) / RECORD_NAME)


def running_stacks(settings: Settings) -> list[StackRecord]:
    root = stacks_root(settings)
    records = (StackRecord.load(p / RECORD_NAME) for p in sorted(root.iterdir())) if root.is_dir() else iter(())
    return [r for r in records if r is not None and r.alive()]


def find_stack(settings: Settings, key: str | int | None = None) -> StackRecord | None:
    """The running stack ``key`` names; without a key, the one on the configured endpoint or
    emulator port, else the only one running."""
    if key is not None:
        record = load_stack(settings, key)
        return record if record is not None and record.alive() else None
    record = load_stack(settings, default_key(settings))
    if record is not None and record.alive():
        return record
    running = running_stacks(settings)
    return running[0] if len(running) == 1 else None


def _touched_since_start(record: StackRecord, name: str) -> bool:
    try:
        return (record.dir / f"{name}.alive").stat().st_mtime >= record.started_at - 1.0
    except OSError:
        return False


def stack_health(record: StackRecord) -> dict[str, bool]:
    """Per process: the emulator answers; each component runs and touched its liveness file
    since the start; a deployed stack (``fidelity`` aws) also: its template is deployed."""
    health = {EMULATOR: is_healthy(record.endpoint)}
    for name, (pid, token) in record.components.items():
        health[name] = _touched_since_start(record, name) and _same_process(pid, token)
    if record.fidelity == "aws":
        health[DEPLOYMENT] = _touched_since_start(record, DEPLOYMENT) and record.supervisor_alive()
    return health


def _terminate_groups(groups: Iterable[tuple[int, str | None]], grace: float) -> None:
    """SIGTERM every live group, SIGKILL what is left after ``grace`` seconds."""
    live = [(pgid, token) for pgid, token in groups if _our_group(pgid, token)]
    for sig, wait_s in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        live = [(pgid, token) for pgid, token in live if _our_group(pgid, token)]
        for pgid, _ in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(_our_group(pgid, token) for pgid, token in live):
            time.sleep(0.1)


def stop_stack(record: StackRecord, timeout: float = 60.0) -> dict[str, list[int]]:
    """Stop every process of a recorded stack; returns the ones that were alive (by name).

    The supervisor (a foreground or detached `cartflow up`) is asked first, with SIGTERM,
    so it stops its children in order; whatever is still alive after that (its supervisor
    was killed, or it hangs) is terminated group by group: a component with its JVM.
    """
    alive = record.live_pids()
    if record.supervisor != os.getpid() and record.supervisor_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.supervisor, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and record.supervisor_alive():
            time.sleep(0.2)
    _terminate_groups(record.groups().values(), grace=10.0)
    if record.supervisor != os.getpid() and record.supervisor_alive():
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.supervisor, signal.SIGKILL)
    if record.fidelity == "aws" and record.port is not None:
        remove_containers(record.port)  # what a killed supervisor left: function and job containers
    if not record.alive():
        record.path.unlink(missing_ok=True)
    return alive


# ----------------------------------------------------------------------------- logs


def log_files(directory: Path) -> dict[str, Path]:
    """Name -> log file of a stack directory: each component, the emulator, the detached supervisor."""
    logs = directory / "logs"
    out: dict[str, Path] = {}
    if (directory / SUPERVISOR_LOG).is_file():
        out["up"] = directory / SUPERVISOR_LOG
    for path in sorted(logs.glob("ministack-*.log")) if logs.is_dir() else []:
        out[EMULATOR] = path
    for name in COMPONENTS:
        if (logs / f"{name}.log").is_file():
            out[name] = logs / f"{name}.log"
    return out


_STAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[,.]\d+)?)")


def merged_lines(files: dict[str, Path], tail: int | None = None) -> list[tuple[str, str]]:
    """(name, line) of every file, interleaved by each line's leading timestamp (a line
    without one keeps its predecessor's place, e.g. a traceback); the last ``tail`` only."""

    def keyed(name: str, path: Path) -> list[tuple[str, int, str, str]]:
        out, stamp = [], ""
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return []
        for i, line in enumerate(text.splitlines()):
            m = _STAMP.match(line)
            stamp = m.group(1).replace("T", " ").replace(",", ".") if m else stamp
            out.append((stamp, i, name, line))
        return out

    merged = [(name, line) for _, _, name, line in heapq.merge(*(keyed(n, p) for n, p in files.items()))]
    return merged[-tail:] if tail else merged


class LogFollower:
    """New complete lines of a set of files, from where each was when created (``tail -f``)."""

    def __init__(self, files: dict[str, Path], from_start: bool = False) -> None:
        self.files = files
        self.offsets = {name: 0 if from_start else _size(path) for name, path in files.items()}
        self._partial: dict[str, bytes] = {}

    def poll(self) -> list[tuple[str, str]]:
        out = []
        for name, path in self.files.items():
            size = _size(path)
            if size < self.offsets[name]:  # truncated or replaced: start over
                self.offsets[name], self._partial[name] = 0, b""
            if size == self.offsets[name]:
                continue
            with path.open("rb") as f:
                f.seek(self.offsets[name])
                chunk = self._partial.pop(name, b"") + f.read(size - self.offsets[name])
            self.offsets[name] = size
            *lines, rest = chunk.split(b"\n")
            if rest:
                self._partial[name] = rest
            out += [(name, line.decode(errors="replace")) for line in lines]
        return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# ----------------------------------------------------------------------------- the stack


@dataclass
class EmbeddedStack:
    settings: Settings
    components: tuple[str, ...] = COMPONENTS
    emulator: EmulatorProcess | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    record: StackRecord | None = None
    _logs: list[IO[bytes]] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        # Once started, settings.state_dir is the stack's own directory (<state_dir>/stacks/<port>).
        return self.settings.state_dir / "logs"

    @property
    def stack_dir(self) -> Path:
        return self.settings.state_dir

    def start(self) -> EmbeddedStack:
        try:
            self._start()
        except BaseException:  # a failed start (or a stop signal during it) leaves no process behind
            self.stop()
            raise
        return self

    def _start(self) -> None:
        port, own_emulator = choose_port(self.settings)
        directory = free_stack_dir(self.settings, port)
        self.settings = self.settings.model_copy(update={"state_dir": directory, "emulator_port": port})
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if own_emulator:
            self.emulator = start_emulator(self.settings, port=port, log_dir=self.log_dir)
            self.settings = self.settings.model_copy(update={"aws_endpoint_url": self.emulator.endpoint})
        endpoint = self.settings.aws_endpoint_url
        if endpoint is None:  # unreachable: set just above, or a healthy configured one
            raise StackError("the stack has no endpoint")
        self.record = StackRecord(
            key=str(port),
            endpoint=endpoint,
            supervisor=os.getpid(),
            supervisor_token=process_token(os.getpid()),
            started_at=time.time(),
            dir=directory,
            emulator=(self.emulator.process.pid, process_token(self.emulator.process.pid)) if self.emulator else None,
        )
        self.record.save()  # before anything else starts: a crash from here on leaves the pids known
        clients = AwsClients(self.settings)
        if self.emulator is not None and self.settings.emulator_persist:
            reset_activities(self.settings, clients)
        apply_resources(self.settings, clients)
        for name in self.components:
            self._spawn(name)

    def _spawn(self, name: str) -> None:
        env = {**os.environ, **settings_env(self.settings)}
        env.setdefault("AWS_ACCESS_KEY_ID", "test")  # the emulator's dummy credentials
        env.setdefault("AWS_SECRET_ACCESS_KEY", "test")
        log = (self.log_dir / f"{name}.log").open("ab")
        self._logs.append(log)
        proc = subprocess.Popen(
            [sys.executable, "-m", "cartflow", "serve", name],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = proc
        if self.record is not None:
            self.record.components[name] = (proc.pid, process_token(proc.pid))
            self.record.save()

    def kill(self, name: str) -> None:
        """SIGKILL a component and its children (a JVM included): a crash, not a shutdown."""
        proc = self.processes[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def restart(self, name: str) -> None:
        """Start a killed (or exited) component again, as a container restart policy would."""
        if self.processes[name].poll() is None:
            raise StackError(f"component {name} is still running")
        self._spawn(name)

    def check_alive(self) -> None:
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                raise StackError(f"component {name} exited with {proc.returncode}; see {self.log_dir / (name + '.log')}")

    def stop(self, timeout: float = 20.0) -> None:
        _STOPPING.set()
        try:
            for proc in self.processes.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            self._wait_components(deadline, but=RUNNER)
            if RUNNER in self.processes and not BusyMarker(self.settings, RUNNER).path.exists():
                # An idle spark-runner sits in a GetActivityTask long poll (up to 60 s). With no
                # task in hand nothing needs the emulator any more: stopping ours ends that poll.
                self._stop_emulator()
            self._wait_components(deadline)
            # A component that exited may leave children in its group (a JVM): they go too.
            _terminate_groups(((p.pid, None) for p in self.processes.values()), grace=5.0)
            for log in self._logs:
                log.close()
            self._stop_emulator()
            if self.record is not None and self.record.supervisor == os.getpid():
                self.record.path.unlink(missing_ok=True)
        finally:
            _STOPPING.clear()

    def _wait_components(self, deadline: float, but: str | None = None) -> None:
        """Wait for the signalled components (all, or all ``but`` one) until ``deadline``;
        SIGKILL each one still running then."""
        for name, proc in self.processes.items():
            if name == but:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def _stop_emulator(self) -> None:
        """Stop the emulator this stack started, if it did (idempotent)."""
        if self.emulator and self.emulator.process.poll() is None:
            # Only a persistent emulator has state to save on SIGTERM; the rest is discarded, so
            # its graceful shutdown (waiting out open long polls) is not worth waiting for.
            self.emulator.stop(timeout=30.0 if self.settings.emulator_persist else 1.0)
            _terminate_groups([(self.emulator.process.pid, None)], grace=5.0)

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
