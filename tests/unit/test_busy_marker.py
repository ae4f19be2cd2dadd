"""cartflow.local.liveness.BusyMarker: a counted marker file for work in hand."""

from __future__ import annotations

import threading
from pathlib import Path

from cartflow.core.config import Settings
from cartflow.local.liveness import BusyMarker


def test_the_marker_stays_until_the_last_holder_lets_go(tmp_path: Path) -> None:
    marker = BusyMarker(Settings(state_dir=tmp_path / "state"), "runner")
    assert marker.path == tmp_path / "state" / "runner.busy"
    assert not marker.path.exists()
    with marker.holding():
        assert marker.path.read_text() == "1"
        with marker.holding():  # a second task waiting for the run lock
            assert marker.path.read_text() == "2"
        assert marker.path.exists()
    assert not marker.path.exists()


def test_the_marker_is_removed_when_the_work_raises(tmp_path: Path) -> None:
    marker = BusyMarker(Settings(state_dir=tmp_path), "runner")
    try:
        with marker.holding():
            raise RuntimeError("job crashed")
    except RuntimeError:
        pass
    assert not marker.path.exists()


def test_holders_on_several_threads(tmp_path: Path) -> None:
    marker = BusyMarker(Settings(state_dir=tmp_path), "runner")
    inside, release = threading.Barrier(5), threading.Event()

    def hold() -> None:
        with marker.holding():
            inside.wait(5)
            release.wait(5)

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for t in threads:
        t.start()
    inside.wait(5)
    assert marker.path.read_text() == "4"
    release.set()
    for t in threads:
        t.join(5)
    assert not marker.path.exists()
