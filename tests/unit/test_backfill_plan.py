"""Which batches a backfill re-runs and what each new batch reads (pure planning)."""

from __future__ import annotations

import json
from datetime import date

import pytest

from cartflow.core.batch_table import Chunk
from cartflow.core.errors import BadInput
from cartflow.core.models import DataType, FileOutcome
from cartflow.ops.backfill import next_backfill_id, plan_backfill

B = "s3://b/raw"


def chunk(batch_id: str, day: str, status: str = "done", files: tuple[str, ...] = ("orders/o.csv",), **kw: object) -> Chunk:
    outcomes = kw.pop("outcomes", [])
    return Chunk(
        group_key=day,
        batch_id=batch_id,
        status=status,
        created_at=int(batch_id[1:14]) if batch_id[1:14].isdigit() else 0,
        file_paths=[f"{B}/{f}" for f in files],
        file_outcomes=json.dumps([o.model_dump() for o in outcomes]) if outcomes else None,
        **kw,  # type: ignore[arg-type]
    )


def test_ids_sort_right_after_the_run_they_replace() -> None:
    original, later_upload = "b1751968800000-2025-07-08-000", "b1751968900000-2025-07-08-000"
    rerun = next_backfill_id(original)
    assert rerun == f"{original}-bf001" and next_backfill_id(rerun) == f"{original}-bf002"
    # "Latest batch wins" compares ids: the re-run stays older than a later upload's batch.
    assert sorted([later_upload, rerun, original]) == [original, rerun, later_upload]


def test_the_newest_done_run_of_each_batch_in_the_range() -> None:
    rejected = FileOutcome(uri=f"{B}/orders/bad.csv", dataset="orders", status="rejected", reason="header")
    gone = FileOutcome(uri=f"{B}/orders/gone.csv", dataset="orders", status="rejected", reason="deleted before its batch read it")
    first = chunk("b1751968800000-2025-07-08-000", "2025-07-08", files=("orders/o.csv", "orders/bad.csv", "orders/gone.csv"),
                  outcomes=[rejected, gone])  # fmt: skip
    later = chunk("b1751968900000-2025-07-09-000", "2025-07-09", files=("order_lines/l.csv",))
    failed = chunk("b1751969000000-2025-07-09-001", "2025-07-09", status="failed")
    outside = chunk("b1751969100000-2025-07-10-000", "2025-07-10")
    plan = plan_backfill([later, first, failed, outside], date(2025, 7, 8), date(2025, 7, 9))
    assert [p.source.batch_id for p in plan] == [first.batch_id, later.batch_id]
    assert plan[0].files == {
        f"{B}/orders/o.csv": f"processed/{first.batch_id}/orders/o.csv",
        f"{B}/orders/bad.csv": f"rejected/{first.batch_id}/orders/bad.csv",  # re-checked under the new rules
    }  # a file deleted before its batch read it was never archived: nothing to re-run
    only_lines = plan_backfill([later, first], date(2025, 7, 8), date(2025, 7, 9), DataType.ORDER_LINES)
    assert [p.source.batch_id for p in only_lines] == [later.batch_id]


def test_a_replaced_run_is_skipped_and_one_in_flight_refuses() -> None:
    first = chunk("b1751968800000-2025-07-08-000", "2025-07-08")
    rerun = chunk(f"{first.batch_id}-bf001", "2025-07-08", replaces=[first.batch_id])
    (p,) = plan_backfill([first, rerun], date(2025, 7, 8), date(2025, 7, 8))
    assert (p.source.batch_id, p.batch_id) == (rerun.batch_id, f"{first.batch_id}-bf002")
    assert p.files == {f"{B}/orders/o.csv": f"processed/{rerun.batch_id}/orders/o.csv"}
    pending = chunk(f"{first.batch_id}-bf001", "2025-07-08", status="pending", replaces=[first.batch_id])
    with pytest.raises(BadInput, match="already being backfilled"):
        plan_backfill([first, pending], date(2025, 7, 8), date(2025, 7, 8))
    with pytest.raises(BadInput, match="before --from"):
        plan_backfill([first], date(2025, 7, 9), date(2025, 7, 8))
