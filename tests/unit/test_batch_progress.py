"""The live batch progress `cartflow demo` and `cartflow wait` print (one renderer for both)."""

from __future__ import annotations

from cartflow.core.batch_table import Chunk
from cartflow.ops.views import BatchProgress, FileState, batch_step

T0 = 1_751_968_800.0


def chunk(status: str, batch_id: str = "b-123", created_at: float = T0 + 5, arn: str | None = None) -> Chunk:
    return Chunk(
        group_key="g",
        batch_id=batch_id,
        status=status,
        created_at=int(created_at * 1000),
        file_paths=["s3://bkt/raw/orders/a.csv"],
        execution_arn=arn,
    )


def file_state(state: str, batch_id: str | None = "b-123", arrived: float = T0) -> FileState:
    return FileState("s3://bkt/raw/orders/a.csv", "g", state, batch_id, None, None, arrived)


def test_batch_step_names_the_state_machine_states() -> None:
    assert batch_step("pending") == "pending"
    assert batch_step("processing") == "processing"
    assert batch_step("processing", "Validate") == "validating"
    assert batch_step("processing", "CheckValidation") == "validating"
    assert batch_step("processing", "Transform") == "transforming"
    assert batch_step("processing", "ArchiveRawFiles") == "archiving"
    assert batch_step("processing", "MarkDone") == "finishing"
    assert batch_step("processing", "ValidateRunTask") == "validating"  # AWS target: nested job states
    assert batch_step("processing", "TransformFailed") == "failing"
    assert batch_step("processing", "NotifyFailure") == "failing"
    assert batch_step("done", "Transform") == "done"
    assert batch_step("failed") == "failed"


def test_a_batch_line_grows_step_by_step_and_freezes_when_done() -> None:
    progress = BatchProgress()
    assert progress.observe([], [file_state("waiting (debounce)", None)], now=T0 + 2) == []
    assert progress.lines(now=T0 + 2) == ["debouncing: 1 file not in a batch yet (2 s)"]

    states = {"Validate": "Validate"}
    snapshots = [
        ("processing", "Validate", T0 + 10),
        ("processing", "Validate", T0 + 12),  # same step: no change
        ("processing", "Transform", T0 + 20),
        ("processing", "ArchiveRawFiles", T0 + 30),
        ("done", None, T0 + 41),
    ]
    changes = []
    for status, state, now in snapshots:
        states["current"] = state or ""
        changed = progress.observe(
            [chunk(status, arn="arn:x")], [file_state("processing")], state_of=lambda _c: states["current"], now=now
        )
        changes.append(len(changed))
    assert changes == [1, 0, 1, 1, 1]
    line = "batch b-123: debouncing -> validating -> transforming -> archiving -> done (41 s)"
    assert progress.lines(now=T0 + 41) == [line]
    assert progress.lines(now=T0 + 500) == [line]  # done: the elapsed time stops
    assert progress.pending() == []


def test_elapsed_runs_from_the_first_upload_while_in_flight() -> None:
    progress = BatchProgress()
    progress.observe([chunk("pending")], [file_state("batched (pending)", arrived=T0 - 3)], now=T0 + 1)
    assert progress.lines(now=T0 + 7) == ["batch b-123: debouncing -> pending (10 s)"]
    assert progress.pending() == ["batch b-123 (pending)"]


def test_batches_settled_before_the_first_look_are_not_followed() -> None:
    progress = BatchProgress()
    old = chunk("done", batch_id="b-old", created_at=T0 - 100)
    progress.observe([old], [file_state("archived", "b-old")], now=T0)
    assert progress.tracks == {} and progress.already_settled == {"b-old"}
    new = chunk("failed", batch_id="b-new")
    changed = progress.observe([old, new], [file_state("archived", "b-old")], now=T0 + 9)
    assert [t.batch_id for t in changed] == ["b-new"]
    assert progress.lines(now=T0 + 9) == ["batch b-new: debouncing -> failed (4 s)"]  # from created_at (no file times)
