"""Per-stack state: the record `down`/`logs`/`wait` find a stack by, log interleaving and following."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cartflow.core.config import Settings
from cartflow.local.liveness import process_token
from cartflow.local.stack import (
    LogFollower,
    StackRecord,
    default_key,
    find_stack,
    log_files,
    merged_lines,
    stack_dir,
    stack_health,
    stop_stack,
)


def record(settings: Settings, port: int, supervisor: int, **kw: object) -> StackRecord:
    r = StackRecord(
        key=str(port),
        endpoint=f"http://127.0.0.1:{port}",
        supervisor=supervisor,
        supervisor_token=process_token(supervisor),
        dir=stack_dir(settings, port),
        **{"started_at": 0.0, **kw},  # type: ignore[arg-type]
    )
    r.save()
    return r


def test_a_record_round_trips_and_is_found_by_port_or_as_the_only_one(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, emulator_port=4566)
    me = os.getpid()
    saved = record(settings, 40001, me, components={"ingest": (me, process_token(me))})
    loaded = StackRecord.load(saved.path)
    assert loaded == saved
    assert find_stack(settings, 40001) == saved
    assert find_stack(settings) == saved  # nothing on 4566, but it is the only one running
    record(settings, 40002, me)
    assert find_stack(settings) is None  # two running, none on the default port: ambiguous
    assert find_stack(settings.model_copy(update={"aws_endpoint_url": "http://127.0.0.1:40002"})).key == "40002"  # type: ignore[union-attr]
    assert default_key(settings) == "4566"


def test_a_deployed_stack_is_healthy_once_its_supervisor_marked_the_deploy(tmp_path: Path) -> None:
    """`up --fidelity aws --detach` returns on this: the emulator alone answering is not enough."""
    settings = Settings(state_dir=tmp_path)
    me = os.getpid()
    saved = record(settings, 40005, me, fidelity="aws", started_at=1.0)
    assert StackRecord.load(saved.path) == saved  # the fidelity is kept
    assert stack_health(saved) == {"emulator": False, "deployment": False}
    (saved.dir / "deployment.alive").touch()
    assert stack_health(saved)["deployment"] is True
    assert "deployment" not in stack_health(record(settings, 40006, me))  # the embedded stack has no deploy


def test_a_dead_or_reused_pid_is_not_a_running_stack(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record(settings, 40003, dead.pid)
    assert find_stack(settings, 40003) is None
    me = os.getpid()
    reused = record(settings, 40004, me)
    reused.supervisor_token = "not-my-start-time"
    reused.save()
    if process_token(me) is not None:  # with procfs, a pid whose start time differs is someone else
        assert find_stack(settings, 40004) is None


def test_stop_stack_terminates_each_recorded_group(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    # A component with a child of its own (as the spark-runner has its JVM), in its own group.
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    leader = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])  # its supervisor was killed
    gone.wait()
    r = record(settings, 40005, gone.pid, components={"spark-runner": (leader.pid, process_token(leader.pid))})
    try:
        stopped = stop_stack(r, timeout=5)
        leader.wait(5)
        assert "spark-runner" in stopped
        assert not r.alive()
        assert not r.path.exists()
    finally:
        if leader.poll() is None:
            os.killpg(leader.pid, 9)


def test_logs_interleave_by_timestamp_and_follow_new_lines(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "ingest.log").write_text("2026-01-01 10:00:00,100 INFO a\n2026-01-01 10:00:02,000 INFO c\nTraceback (continued)\n")
    (logs / "debouncer.log").write_text("2026-01-01 10:00:01,500 INFO b\n")
    (logs / "ministack-4566.log").write_text("")
    files = log_files(tmp_path)
    assert set(files) == {"ingest", "debouncer", "emulator"}
    assert merged_lines(files) == [
        ("ingest", "2026-01-01 10:00:00,100 INFO a"),
        ("debouncer", "2026-01-01 10:00:01,500 INFO b"),
        ("ingest", "2026-01-01 10:00:02,000 INFO c"),
        ("ingest", "Traceback (continued)"),
    ]
    assert merged_lines(files, tail=1) == [("ingest", "Traceback (continued)")]
    follower = LogFollower(files)
    assert follower.poll() == []
    with (logs / "debouncer.log").open("a") as f:
        f.write("new line\npartial")
    assert follower.poll() == [("debouncer", "new line")]
    with (logs / "debouncer.log").open("a") as f:
        f.write(" done\n")
    assert follower.poll() == [("debouncer", "partial done")]
