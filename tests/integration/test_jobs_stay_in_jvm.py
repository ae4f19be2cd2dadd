"""The jobs run inside the JVM: no Python worker processes, small frames built from literals,
independent writes side by side (real Spark local[2], real Delta)."""

from __future__ import annotations

import os
import threading
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyspark")

from pyspark.sql import types as T

from cartflow.core.config import Settings
from cartflow.core.models import BatchInput
from cartflow.local.fixturegen import generate
from spark.jobs.frames import local_frame
from spark.jobs.together import run_together
from spark.jobs.transform import KpiRows, run_transform
from spark.jobs.validation import run_validation

pytestmark = pytest.mark.integration


def _python_workers(spark: Any) -> list[str]:
    """Command lines of PySpark worker processes under this test's JVM (pyspark.daemon / worker)."""
    jvm = int(spark._jvm.java.lang.ProcessHandle.current().pid())
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    found, frontier = [], [jvm]
    while frontier:
        for pid in children.get(frontier.pop(), []):
            frontier.append(pid)
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "pyspark.daemon" in cmd or "pyspark.worker" in cmd:
                found.append(cmd)
    return found


class _Sink:
    rows: KpiRows | None = None

    def write(self, rows: KpiRows, batch_id: str) -> None:
        self.rows = rows


def test_a_batch_of_both_shapes_starts_no_python_worker(spark: Any, tmp_path: Path) -> None:
    # Python workers outlive the job that started them (the daemon is reused), so none may
    # exist once validation and transformation of a batch are done.
    assert _python_workers(spark) == []
    paths: dict[str, list[str]] = {}
    for shape in ("order_lines", "tables"):
        for data_type, files in generate(shape, 300, tmp_path / shape, invalid_fraction=0.05).items():  # type: ignore[arg-type]
            paths.setdefault(f"{data_type}_paths", []).extend(p.as_uri() for p in files)
    batch = BatchInput(batch_id="b-jvm-1", group_key="g", bucket="b", processing_date="2025-07-08", **paths)  # type: ignore[arg-type]
    settings = Settings(max_quarantined_share=1.0)
    warehouse = (tmp_path / "warehouse").as_uri()
    result = run_validation(spark, settings, batch, warehouse)
    sink = _Sink()
    run_transform(spark, settings, batch, warehouse, sink=sink)
    assert result.status == "passed"
    assert sink.rows is not None and sink.rows.order_rows
    assert _python_workers(spark) == []


def test_local_frame_keeps_every_value_and_type(spark: Any) -> None:
    schema = T.StructType(
        [
            T.StructField("day", T.DateType()),
            T.StructField("n", T.LongType()),
            T.StructField("money", T.DecimalType(38, 2)),
            T.StructField("text", T.StringType()),
            T.StructField("flag", T.BooleanType()),
            T.StructField("ratio", T.DoubleType()),
        ]
    )
    rows = [
        (date(2025, 7, 1), 2**40, Decimal("12345678901234.56"), None, True, 0.1),
        (date(2025, 7, 2), -(2**62), Decimal("0.01"), 'a\'b "c" \\ é\n', None, None),
        (date(2025, 7, 3), 0, Decimal("-0.10"), "", False, 1e-300),
    ] + [(date(2025, 8, 1), n, Decimal(n) / 100, f"row {n}", n % 2 == 0, n / 7) for n in range(500)]
    frame = local_frame(spark, rows, schema)
    assert [f.dataType for f in frame.schema.fields] == [f.dataType for f in schema.fields]
    assert [tuple(r) for r in frame.collect()] == rows
    empty = local_frame(spark, [], schema)
    assert [f.dataType for f in empty.schema.fields] == [f.dataType for f in schema.fields]
    assert empty.collect() == []
    # Built in the JVM: the plan scans no RDD of pickled Python rows.
    assert "ExistingRDD" not in frame._jdf.queryExecution().executedPlan().toString()


def test_run_together_runs_all_in_the_callers_job_group_and_raises_the_first_failure(spark: Any) -> None:
    sc = spark.sparkContext
    sc.setJobGroup("together-test", "run_together")
    threads: set[str] = set()

    def action(n: int) -> None:
        threads.add(threading.current_thread().name)
        spark.range(n).count()

    run_together(spark, [lambda: action(10), lambda: action(20)])
    assert len(sc.statusTracker().getJobIdsForGroup("together-test")) >= 2
    assert len(threads) == 2

    done: list[str] = []

    def fails() -> None:
        raise ValueError("first")

    def slow() -> None:
        spark.range(5).count()
        done.append("slow")

    with pytest.raises(ValueError, match="first"):
        run_together(spark, [fails, slow])
    assert done == ["slow"]  # the other action still ran to its end


def test_row_expressions_are_built_once_per_contract_and_gateway(spark: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from spark.jobs.contracts import load_contracts
    from spark.jobs.validation import rows

    contract = load_contracts(None)["order_lines"]
    built: list[str] = []
    real = rows._build_checks

    def counting(c: Any) -> Any:
        built.append(c.dataset)
        return real(c)

    monkeypatch.setattr(rows, "_build_checks", counting)
    cache = rows._ChecksCache()
    first, second = cache.get(contract), cache.get(contract)
    assert built == ["order_lines"] and first is second
    # Expressions belong to one Py4J gateway: another gateway (a new JVM) builds them anew.
    cache.gateway = object()
    assert cache.get(contract) is not first
    assert built == ["order_lines", "order_lines"]
