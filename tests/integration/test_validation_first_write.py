"""A batch's first validation appends its rows; any run after the registry holds it replaces them.

Appending spares Delta the log replay replaceWhere needs (docs/benchmarks.md, small
batches). It is only right while no table can hold rows of the batch without the file
registry holding some too: the registry is committed first, so a run that failed after it
is retried in replace mode and leaves every row exactly once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyspark")
deltalake = pytest.importorskip("deltalake")

from pyspark.sql import SparkSession  # noqa: E402

from cartflow.core.config import Settings  # noqa: E402
from cartflow.core.models import BatchInput  # noqa: E402
from spark.jobs.validation import output, run_validation  # noqa: E402

pytestmark = pytest.mark.integration

LINES_H = "order_id,customer_id,order_date,category,product_id,quantity,unit_price,returned"


def _batch(root: Path, batch_id: str, rows: list[str]) -> BatchInput:
    path = root / "raw" / f"{batch_id}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([LINES_H, *rows]) + "\n")
    return BatchInput(
        batch_id=batch_id, group_key="g", bucket="cartflow-test", processing_date="2025-07-08", order_lines_paths=[path.as_uri()]
    )


def _rows(root: Path, *parts: str) -> list[dict[str, Any]]:
    dt = deltalake.DeltaTable(str(root.joinpath("warehouse", *parts)))
    table = deltalake.QueryBuilder().register("t", dt).execute("SELECT * FROM t").read_all()
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _last_mode(root: Path, *parts: str) -> str:
    """The save mode of the table's latest commit (delta-rs reads the commit info)."""
    latest = deltalake.DeltaTable(str(root.joinpath("warehouse", *parts))).history(1)[0]
    return str(latest["operationParameters"]["mode"])


@pytest.fixture()
def settings() -> Settings:
    return Settings(aws_endpoint_url="http://127.0.0.1:9", bucket="cartflow-test", max_quarantined_share=1.0)


GOOD = "ORD{n},CUST1,2025-07-06,Books,PROD{n},1,5.00,false"
BAD = "ORD{n},CUST1,2025-07-06,Books,PROD{n},-1,5.00,false"  # quantity below its minimum


def test_a_new_batch_appends_and_its_replay_replaces(tmp_path: Path, spark: SparkSession, settings: Settings) -> None:
    warehouse = tmp_path.joinpath("warehouse").as_uri()
    first = _batch(tmp_path, "20250708T100000Z-a", [GOOD.format(n=1), BAD.format(n=2)])
    second = _batch(tmp_path, "20250708T110000Z-b", [GOOD.format(n=3), GOOD.format(n=4), BAD.format(n=5)])
    assert run_validation(spark, settings, first, warehouse).status == "passed"

    assert run_validation(spark, settings, second, warehouse).status == "passed"
    for table in (("validated", "order_lines"), ("quarantine", "order_lines"), ("file_registry",)):
        assert _last_mode(tmp_path, *table) == "Append"

    assert run_validation(spark, settings, second, warehouse).status == "passed"  # a replay of the same batch
    assert _last_mode(tmp_path, "validated", "order_lines") == "Overwrite"
    assert sorted(r["order_id"] for r in _rows(tmp_path, "validated", "order_lines")) == ["ORD1", "ORD3", "ORD4"]
    assert sorted(r["order_id"] for r in _rows(tmp_path, "quarantine", "order_lines")) == ["ORD2", "ORD5"]
    assert len(_rows(tmp_path, "file_registry")) == 2


def test_a_retry_after_a_failed_write_replaces_what_the_failed_run_left(
    tmp_path: Path, spark: SparkSession, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = tmp_path.joinpath("warehouse").as_uri()
    run_validation(spark, settings, _batch(tmp_path, "20250708T100000Z-h", [GOOD.format(n=1)]), warehouse)
    batch = _batch(tmp_path, "20250708T110000Z-f", [GOOD.format(n=2), BAD.format(n=3)])

    real = output.replace_batch_rows

    def quarantine_fails(frame: Any, uri: str, *args: Any, **kwargs: Any) -> None:
        if "/quarantine/" in uri:
            raise RuntimeError("injected: quarantine write failed")
        real(frame, uri, *args, **kwargs)

    monkeypatch.setattr(output, "replace_batch_rows", quarantine_fails)
    with pytest.raises(RuntimeError, match="injected"):
        run_validation(spark, settings, batch, warehouse)
    monkeypatch.undo()
    # The failed run committed the registry and validated/ (appended), not quarantine/.
    assert sorted(r["order_id"] for r in _rows(tmp_path, "validated", "order_lines")) == ["ORD1", "ORD2"]

    assert run_validation(spark, settings, batch, warehouse).status == "passed"

    assert _last_mode(tmp_path, "validated", "order_lines") == "Overwrite"
    assert sorted(r["order_id"] for r in _rows(tmp_path, "validated", "order_lines")) == ["ORD1", "ORD2"]
    assert sorted(r["order_id"] for r in _rows(tmp_path, "quarantine", "order_lines")) == ["ORD3"]
    assert len(_rows(tmp_path, "file_registry")) == 2


def test_two_first_runs_of_one_batch_at_once_leave_its_rows_once(
    tmp_path: Path, spark: SparkSession, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second run read the registry before the first committed (both see no row of the
    batch): its appends carry the same Delta transaction id and are skipped."""
    from spark.jobs.validation import files, job

    warehouse = tmp_path.joinpath("warehouse").as_uri()
    run_validation(spark, settings, _batch(tmp_path, "20250708T100000Z-h", [GOOD.format(n=1)]), warehouse)
    batch = _batch(tmp_path, "20250708T110000Z-d", [GOOD.format(n=2), BAD.format(n=3)])
    assert run_validation(spark, settings, batch, warehouse).status == "passed"

    real = files.read_registry

    def read_before_the_first_committed(*args: Any, **kwargs: Any) -> files.RegistryView:
        return files.RegistryView(earlier=real(*args, **kwargs).earlier, owners_written=False)

    monkeypatch.setattr(job, "read_registry", read_before_the_first_committed)
    assert run_validation(spark, settings, batch, warehouse).status == "passed"

    assert sorted(r["order_id"] for r in _rows(tmp_path, "validated", "order_lines")) == ["ORD1", "ORD2"]
    assert sorted(r["order_id"] for r in _rows(tmp_path, "quarantine", "order_lines")) == ["ORD3"]
    assert len(_rows(tmp_path, "file_registry")) == 2
