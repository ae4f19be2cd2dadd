"""Stopping the embedded stack: an idle spark-runner exits on SIGTERM instead of being killed
after it waited out its GetActivityTask long poll (up to 60 s); a runner with a task in hand
keeps the emulator until it is done."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from cartflow.core.config import Settings
from cartflow.local.emulator import free_port
from cartflow.local.liveness import BusyMarker
from cartflow.local.spark_runner import LIVENESS_NAME
from cartflow.local.stack import EmbeddedStack

pytestmark = pytest.mark.integration
RUNNER = LIVENESS_NAME


def _polling_runner(tmp_path: Path) -> EmbeddedStack:
    """A stack with its own emulator and only the spark-runner, once the runner polls."""
    settings = Settings(state_dir=tmp_path / "state", emulator_port=free_port(), aws_endpoint_url=None)
    stack = EmbeddedStack(settings, (RUNNER,)).start()
    alive = Path(stack.settings.state_dir) / f"{RUNNER}.alive"
    deadline = time.monotonic() + 60
    while not alive.exists():  # touched right before the first GetActivityTask
        assert time.monotonic() < deadline, "the spark-runner never started polling"
        stack.check_alive()
        time.sleep(0.2)
    time.sleep(1.0)  # inside its long poll now
    return stack


def test_an_idle_runner_exits_on_sigterm(tmp_path: Path) -> None:
    stack = _polling_runner(tmp_path)
    stack.stop(timeout=20)
    # Without the emulator stopping first the poll would outlast the 20 s and end by SIGKILL.
    assert stack.processes[RUNNER].returncode == 0
    assert stack.emulator is not None and stack.emulator.process.poll() is not None


def test_a_runner_with_a_task_in_hand_keeps_the_emulator(tmp_path: Path) -> None:
    stack = _polling_runner(tmp_path)
    marker = BusyMarker(stack.settings, RUNNER)
    marker.path.write_text("1")  # what the runner writes while it holds a task
    try:
        stack.stop(timeout=3)
    finally:
        marker.path.unlink(missing_ok=True)
    # The emulator stayed up, so the runner's poll went on past the deadline: it was killed.
    assert stack.processes[RUNNER].returncode == -signal.SIGKILL
