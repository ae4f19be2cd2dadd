"""Stack lifecycle with real processes: `up --detach`, `status`, `logs`, `down`; SIGTERM to a
foreground `up`; two stacks side by side. Each stack runs on a free port with a private
state dir; no batch is processed here (the pipeline tests do that)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cartflow.core.config import Settings
from cartflow.local.emulator import free_port, nothing_listens
from cartflow.local.liveness import group_pids, pid_alive
from cartflow.local.stack import StackRecord, load_stack, stack_health, stop_stack
from tests.conftest import REPO, require

pytestmark = pytest.mark.integration

LIGHT = ("--only", "ingest", "--only", "debouncer")  # two components: enough for lifecycle, light on CPU


def stack_env(state: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CARTFLOW_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL")}
    env.update({"CARTFLOW_STATE_DIR": str(state), "CARTFLOW_EMULATOR_PORT": str(port), "PYTHONUNBUFFERED": "1"})
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cartflow", *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def all_pids(record: StackRecord) -> set[int]:
    """Every process of the stack: supervisor, emulator, components and their children (a JVM)."""
    pids = {record.supervisor}
    for pgid, _ in record.groups().values():
        pids |= {pgid, *group_pids(pgid)}
    return pids


def assert_gone(record: StackRecord, pids: set[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.2)
    assert [p for p in pids if pid_alive(p)] == []
    for pgid, _ in record.groups().values():
        assert group_pids(pgid) == []
    assert nothing_listens(int(record.key)), f"port {record.key} still taken"


@pytest.fixture
def stacks(tmp_path: Path) -> Iterator[list[StackRecord]]:
    """Records of the stacks a test started: whatever a failing test leaves is stopped."""
    started: list[StackRecord] = []
    yield started
    for record in started:
        current = StackRecord.load(record.path) or record
        stop_stack(current, timeout=20)


def test_up_detach_status_logs_down(tmp_path: Path, stacks: list[StackRecord]) -> None:
    require(shutil.which("java") is not None, "java 17 is needed for the spark-runner")
    from spark.fetch_jars import check

    require(not check(Settings().jars_dir), "the Spark jars are needed: run `make jars`")
    state, port = tmp_path / "state", free_port()
    env = stack_env(state, port)

    up = cli(env, "up", "--detach", "--debounce", "1")
    record = load_stack(Settings(state_dir=state), port)
    if record is not None:
        stacks.append(record)
    assert up.returncode == 0, up.stdout + up.stderr
    assert f"export CARTFLOW_AWS_ENDPOINT_URL=http://127.0.0.1:{port}" in up.stdout
    assert record is not None and record.dir == state / "stacks" / str(port)
    assert set(record.components) == {"ingest", "stream-trigger", "debouncer", "controller", "spark-runner"}
    assert all(stack_health(record).values())
    assert pid_alive(record.supervisor)  # the background `up` outlived `up --detach`

    status = cli({**env, "CARTFLOW_AWS_ENDPOINT_URL": record.endpoint}, "status")
    assert status.returncode == 0, status.stderr
    assert "batch" in status.stdout

    logs = cli(env, "logs")
    assert logs.returncode == 0, logs.stderr
    assert any(line.startswith("ingest ") and "ingest: started" in line for line in logs.stdout.splitlines()), logs.stdout
    one = cli(env, "logs", "debouncer")
    assert one.returncode == 0 and "debouncer" in one.stdout and " | " not in one.stdout
    bad = cli(env, "logs", "nosuch")
    assert bad.returncode != 0 and "known:" in bad.stderr and "Traceback" not in bad.stderr

    # The spark-runner builds its SparkSession at start: its JVM is a child in its group.
    runner = record.components["spark-runner"][0]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(group_pids(runner)) < 2:
        time.sleep(0.5)
    jvm = [p for p in group_pids(runner) if p != runner]
    assert jvm, "the spark-runner started no JVM"
    follow = subprocess.Popen(
        [sys.executable, "-m", "cartflow", "logs", "-f"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    pids = all_pids(record)

    down = cli(env, "down", timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"stopped the stack on port {port}" in down.stdout
    assert_gone(record, pids | set(jvm))
    assert not record.path.exists()
    try:
        followed, _ = follow.communicate(timeout=20)  # `logs -f` ends once the stack is gone
    finally:
        follow.kill()
    assert follow.returncode == 0, followed

    again = cli(env, "down")
    assert again.returncode == 0 and "nothing to stop" in again.stdout


def test_sigterm_to_a_foreground_up_stops_every_process(tmp_path: Path, stacks: list[StackRecord]) -> None:
    state, port = tmp_path / "state", free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cartflow", "up", *LIGHT],
        env=stack_env(state, port),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        record = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            record = load_stack(Settings(state_dir=state), port)
            if record is not None and set(record.components) == {"ingest", "debouncer"} and all(stack_health(record).values()):
                break
            time.sleep(0.5)
        assert record is not None and record.supervisor == proc.pid
        stacks.append(record)
        pids = all_pids(record)
        assert len(pids) >= 4  # supervisor, emulator, two components

        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, out
        assert "SIGTERM: every process of the stack stopped" in out
        assert_gone(record, pids)
        assert not record.path.exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_two_stacks_have_separate_state(tmp_path: Path, stacks: list[StackRecord]) -> None:
    state = tmp_path / "state"
    ports = [free_port(), free_port()]
    while ports[1] == ports[0]:
        ports[1] = free_port()
    records = []
    for port in ports:
        up = cli(stack_env(state, port), "up", "--detach", *LIGHT)
        record = load_stack(Settings(state_dir=state), port)
        if record is not None:
            stacks.append(record)
        assert up.returncode == 0, up.stdout + up.stderr
        assert record is not None
        records.append(record)
    a, b = records
    assert a.dir != b.dir and a.endpoint != b.endpoint
    for r in records:
        assert (r.log_dir / "ingest.log").is_file() and (r.dir / "ingest.alive").is_file()
        assert any(p.name.startswith(f"ministack-{r.key}") for p in r.log_dir.iterdir())
    assert not (a.log_dir / f"ministack-{b.key}.log").exists()
    assert set(a.groups()) == set(b.groups()) and not {p for p, _ in a.groups().values()} & {p for p, _ in b.groups().values()}

    # `down` picks the stack by its port and leaves the other alone.
    pids_a = all_pids(a)
    down = cli(stack_env(state, ports[1]), "down", "--port", a.key)
    assert down.returncode == 0, down.stdout + down.stderr
    assert_gone(a, pids_a)
    assert b.alive() and all(stack_health(b).values())
    pids_b = all_pids(b)
    assert cli(stack_env(state, ports[1]), "down").returncode == 0  # the default: the configured port
    assert_gone(b, pids_b)
