"""The two measured engines. Each runs in its own (spawned) process so that its peak RSS is its own.

``run_baseline``: the DuckDB oracle (tests/oracle.py): validation + both KPI sets.
``run_spark``: cartflow's jobs (run_validation + run_transform) on a warm local SparkSession.

Both return plain picklable dicts: per-repeat stage wall times, the KPI rows of the first
repeat (for the agreement check), per-dataset valid/quarantined counts and peak RSS figures.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- /proc helpers


def proc_status_kb(pid: int | str, field: str) -> int | None:
    """A ``kB`` field of /proc/<pid>/status (VmHWM = peak RSS, VmRSS = current RSS); None if gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def cpu_seconds(pid: int | str = "self") -> float | None:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # after ")": state(0) ppid(1) ... utime(11) stime(12)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def descendant_pids(root: int) -> list[int]:
    """Every live descendant of ``root`` (psutil-free: ppid from /proc/<pid>/stat)."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        # comm may hold spaces/parens: fields after the last ')' are "state ppid ..."
        parent_of[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parent_of.items() if ppid == parent]
        found += children
        frontier += children
    return found


def find_jvm_pid(spark: Any) -> int | None:
    """The driver JVM's pid: ask the JVM itself, else look for a java descendant in /proc."""
    try:
        pid = int(spark._jvm.java.lang.ProcessHandle.current().pid())
        if proc_status_kb(pid, "VmHWM") is not None:
            return pid
    except Exception:  # noqa: BLE001 - fall back to /proc
        pass
    for pid in descendant_pids(os.getpid()):
        try:
            with open(f"/proc/{pid}/comm") as fh:
                if fh.read().strip() == "java":
                    return pid
        except OSError:
            continue
    return None


# ----------------------------------------------------------------------------- baseline


def run_baseline(batch_files: dict[str, list[str]], repeat: int, threads: int) -> dict[str, Any]:
    """The DuckDB oracle over the raw CSVs: validation (load + checks + merge) then both KPI sets."""
    import duckdb

    sys.path.insert(0, str(REPO / "tests"))
    import oracle  # tests/oracle.py: independent of cartflow.jobs by design

    batch = {ds: [Path(p) for p in paths] for ds, paths in batch_files.items()}
    runs: list[dict[str, float]] = []
    first: dict[str, Any] = {}
    load_before, cpu_before = load1(), cpu_seconds()
    for r in range(repeat):
        con = duckdb.connect(":memory:", config={"threads": threads})
        started = time.perf_counter()
        orc = oracle.Oracle(con=con)
        touched = orc.add_batch(batch)
        validated = time.perf_counter()
        order_kpis, category_kpis = orc.kpis(touched)
        done = time.perf_counter()
        runs.append({"validate": validated - started, "kpis": done - validated})
        if r == 0:
            rejected = Counter(rej.dataset for rej in orc.rejected)
            first = {
                "touched": sorted(touched),
                "order_kpis": order_kpis,
                "category_kpis": category_kpis,
                "counts": {
                    ds: {
                        "valid": con.execute(f"SELECT count(*) FROM ok_0_{ds}").fetchone()[0],
                        "quarantined": rejected.get(ds, 0),
                    }
                    for ds in batch
                },
            }
        con.close()
        del orc, con
    cpu_after = cpu_seconds()
    return {
        **first,
        "runs": runs,
        "threads": threads,
        "cpu_s_per_run": (cpu_after - cpu_before) / repeat if cpu_before is not None and cpu_after is not None else None,
        "load1": (load_before, load1()),
        "duckdb_version": duckdb.__version__,
        "python_hwm_kb": proc_status_kb("self", "VmHWM"),
    }


# ----------------------------------------------------------------------------- spark


@dataclass
class MemorySink:
    """KpiSink that keeps the rows in memory: DynamoDB is not part of the measurement."""

    rows: Any = None

    def write(self, rows: Any, batch_id: str) -> None:
        self.rows = rows


def _cpu_total(jvm_pid: int | None) -> float | None:
    """CPU seconds of this Python driver plus the JVM."""
    own = cpu_seconds()
    jvm = cpu_seconds(jvm_pid) if jvm_pid else None
    return None if own is None or jvm is None else own + jvm


def run_spark(
    batch_files: dict[str, list[str]],
    repeat: int,
    workdir: str,
    master: str,
    shuffle_partitions: int,
    driver_memory: str,
    log_path: str,
) -> dict[str, Any]:
    """Session start once, then ``repeat`` x (run_validation + run_transform), each into a fresh warehouse."""
    # Spark/log4j/py4j chatter goes to a file (the JVM inherits fd 2), not over the result table.
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 2)

    import pyspark

    from cartflow.config import Settings
    from cartflow.jobs.session import build_spark
    from cartflow.jobs.transform import run_transform
    from cartflow.jobs.validate import run_validation
    from cartflow.models import BatchInput

    # No aws_endpoint_url: file:// warehouse and inputs, no S3 client, no credentials needed.
    settings = Settings(
        spark_master=master, spark_shuffle_partitions=shuffle_partitions, spark_driver_memory=driver_memory
    )
    started = time.perf_counter()
    spark = build_spark(settings, "cartflow-bench")
    session_s = time.perf_counter() - started
    spark.sparkContext.setLogLevel("ERROR")
    jvm_pid = find_jvm_pid(spark)

    load_before = load1()
    cpu_before = _cpu_total(jvm_pid)
    paths = {f"{ds}_paths": [Path(p).resolve().as_uri() for p in files] for ds, files in batch_files.items()}
    runs: list[dict[str, float]] = []
    first: dict[str, Any] = {}
    try:
        for r in range(repeat):
            warehouse = Path(workdir) / f"warehouse-{r}"
            shutil.rmtree(warehouse, ignore_errors=True)
            batch = BatchInput(
                batch_id=f"bench-{r}", group_key="bench", bucket=settings.bucket, processing_date="2025-07-08", **paths
            )
            sink = MemorySink()
            sc = spark.sparkContext
            sc.setJobGroup(f"bench-validate-{r}", "bench: run_validation")
            t0 = time.perf_counter()
            validation = run_validation(spark, settings, batch, warehouse.as_uri())
            t1 = time.perf_counter()
            if validation.status != "passed":
                raise RuntimeError(f"validation failed: {validation.errors}")
            sc.setJobGroup(f"bench-kpis-{r}", "bench: run_transform")
            transform = run_transform(spark, settings, batch, warehouse.as_uri(), sink=sink)
            t2 = time.perf_counter()
            tracker = sc.statusTracker()
            runs.append(
                {
                    "validate": t1 - t0,
                    "kpis": t2 - t1,
                    # Spark jobs started from the job's own thread (Delta's background threads not counted).
                    "validate_jobs": len(tracker.getJobIdsForGroup(f"bench-validate-{r}")),
                    "kpis_jobs": len(tracker.getJobIdsForGroup(f"bench-kpis-{r}")),
                }
            )
            rows = sink.rows
            result = {
                "touched": list(rows.touched_dates),
                "order_rows": [dict(i) for i in rows.order_rows],
                "category_rows": [dict(i) for i in rows.category_rows],
                "counts": {
                    ds: {"valid": t.valid_rows, "quarantined": t.quarantined_rows, "input": t.input_rows}
                    for ds, t in validation.tables.items()
                },
                "transform_order_dates": transform.order_dates,
            }
            if r == 0:
                first = result
            elif result["order_rows"] != first["order_rows"] or result["category_rows"] != first["category_rows"]:
                raise RuntimeError(f"repeat {r} produced different KPI rows than repeat 0")
            shutil.rmtree(warehouse, ignore_errors=True)
        cpu_after = _cpu_total(jvm_pid)
        jvm_hwm = proc_status_kb(jvm_pid, "VmHWM") if jvm_pid else None
        python_hwm = proc_status_kb("self", "VmHWM")
    finally:
        spark.stop()
        os.close(log_fd)
    return {
        **first,
        "runs": runs,
        "session_s": session_s,
        "master": master,
        "shuffle_partitions": shuffle_partitions,
        "driver_memory": driver_memory,
        "pyspark_version": pyspark.__version__,
        "jvm_pid": jvm_pid,
        "cpu_s_per_run": (cpu_after - cpu_before) / repeat if cpu_before is not None and cpu_after is not None else None,
        "load1": (load_before, load1()),
        "jvm_hwm_kb": jvm_hwm,
        "python_hwm_kb": python_hwm,
    }
