"""The measured engines. Each runs in its own (spawned) process so that its peak RSS is its own.

``run_spark``: cartflow's jobs (run_validation + run_transform) on a warm local SparkSession.
``run_duckdb``: bench/engine_duckdb.py, the same contracts and KPIs in lean DuckDB SQL.
``run_polars``: bench/engine_polars.py, the same in polars.
``run_oracle``: the DuckDB test oracle (tests/oracle.py), slower, kept as a cross-check.

All return plain picklable dicts: per-repeat stage wall times, the KPI rows of the first
repeat as {order_date: attrs} / {(category, order_date): attrs} (for the agreement check),
per-dataset valid/quarantined counts and peak RSS figures.
"""

from __future__ import annotations

import os
import shutil
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
    except Exception:
        pass
    for pid in descendant_pids(os.getpid()):
        try:
            with open(f"/proc/{pid}/comm") as fh:
                if fh.read().strip() == "java":
                    return pid
        except OSError:
            continue
    return None


# ----------------------------------------------------------------------------- single-node engines


def _set_threads(threads: int) -> None:
    """Before polars/DuckDB are imported: their pools size themselves once, at import."""
    os.environ["POLARS_MAX_THREADS"] = str(threads)


def _single_node(name: str, version: str, repeat: int, threads: int, once: Any) -> dict[str, Any]:
    """``once()`` -> (validate s, KPIs s, result dict); run ``repeat`` times, first result kept."""
    runs: list[dict[str, float]] = []
    first: dict[str, Any] = {}
    load_before, cpu_before = load1(), cpu_seconds()
    for r in range(repeat):
        validate_s, kpis_s, result = once()
        runs.append({"validate": validate_s, "kpis": kpis_s})
        if r == 0:
            first = result
    cpu_after = cpu_seconds()
    return {
        **first,
        "engine": name,
        "version": version,
        "runs": runs,
        "threads": threads,
        "cpu_s_per_run": (cpu_after - cpu_before) / repeat if cpu_before is not None and cpu_after is not None else None,
        "load1": (load_before, load1()),
        "python_hwm_kb": proc_status_kb("self", "VmHWM"),
    }


def run_duckdb(batch_files: dict[str, list[str]], repeat: int, threads: int) -> dict[str, Any]:
    """bench/engine_duckdb.py: the lean DuckDB implementation (one statement per dataset)."""
    _set_threads(threads)
    import duckdb

    from bench.engine_duckdb import Engine

    batch = {ds: [Path(p) for p in paths] for ds, paths in batch_files.items()}

    def once() -> tuple[float, float, dict[str, Any]]:
        started = time.perf_counter()
        engine = Engine(threads)
        counts = engine.run(batch)
        validated = time.perf_counter()
        touched, order_kpis, category_kpis = engine.kpis()
        done = time.perf_counter()
        engine.close()
        result = {"touched": touched, "order_kpis": order_kpis, "category_kpis": category_kpis, "counts": counts}
        return validated - started, done - validated, result

    return _single_node("duckdb", duckdb.__version__, repeat, threads, once)


def run_polars(batch_files: dict[str, list[str]], repeat: int, threads: int) -> dict[str, Any]:
    """bench/engine_polars.py: the same rules and KPIs in polars (lazy, one projection per dataset)."""
    _set_threads(threads)
    import polars as pl

    from bench import engine_polars

    batch = {ds: [Path(p) for p in paths] for ds, paths in batch_files.items()}

    def once() -> tuple[float, float, dict[str, Any]]:
        started = time.perf_counter()
        counts, valid = engine_polars.run(batch)
        validated = time.perf_counter()
        touched, order_kpis, category_kpis = engine_polars.kpis(valid)
        done = time.perf_counter()
        result = {"touched": touched, "order_kpis": order_kpis, "category_kpis": category_kpis, "counts": counts}
        return validated - started, done - validated, result

    return _single_node("polars", pl.__version__, repeat, threads, once)


def run_oracle(batch_files: dict[str, list[str]], repeat: int, threads: int) -> dict[str, Any]:
    """The DuckDB test oracle (tests/oracle.py): written for being obviously right, not for speed."""
    _set_threads(threads)
    import duckdb

    from bench.common import one_row
    from tests import oracle  # independent of spark.jobs by design; bench runs from a checkout

    batch = {ds: [Path(p) for p in paths] for ds, paths in batch_files.items()}

    def once() -> tuple[float, float, dict[str, Any]]:
        con = duckdb.connect(":memory:", config={"threads": threads})
        con.execute("SET enable_progress_bar = false")
        started = time.perf_counter()
        orc = oracle.Oracle(con=con)
        touched = orc.add_batch(batch)
        validated = time.perf_counter()
        order_kpis, category_kpis = orc.kpis(touched)
        done = time.perf_counter()
        rejected = Counter(rej.dataset for rej in orc.rejected)
        counts = {
            ds: {
                "valid": one_row(con, f"SELECT count(*) FROM ok_0_{ds}")[0],
                "quarantined": rejected.get(ds, 0),
            }
            for ds in batch
        }
        con.close()
        result = {"touched": sorted(touched), "order_kpis": order_kpis, "category_kpis": category_kpis, "counts": counts}
        return validated - started, done - validated, result

    return _single_node("oracle", duckdb.__version__, repeat, threads, once)


ENGINES = {"duckdb": run_duckdb, "polars": run_polars, "oracle": run_oracle}


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


@dataclass
class TimedBatch:
    validate_s: float
    kpis_s: float
    validation: Any  # the job's ValidationResult
    rows: Any  # the transform's KpiRows


def timed_batch(
    spark: Any, settings: Any, files: dict[str, list[str]], batch_id: str, lake_uri: str, job_groups: tuple[str, str]
) -> TimedBatch:
    """One batch of ``files`` ({dataset: [path]}) through run_validation + run_transform into
    ``lake_uri``, each under its Spark job group (what bench.profile reads), timed. A failed
    validation raises: a bench number of a failed batch means nothing."""
    from cartflow.core.models import BatchInput
    from spark.jobs.transform import run_transform
    from spark.jobs.validation import run_validation

    paths = {f"{ds}_paths": [Path(p).resolve().as_uri() for p in fs] for ds, fs in files.items()}
    batch = BatchInput.model_validate(
        {
            "batch_id": batch_id,
            "group_key": "bench",
            "bucket": settings.bucket,
            "processing_date": "2025-07-08",
            "archive": [],  # nothing to archive: the files stay where the benchmark wrote them
            **paths,
        }
    )
    sc = spark.sparkContext
    sink = MemorySink()
    sc.setJobGroup(job_groups[0], "bench: run_validation")
    t0 = time.perf_counter()
    validation = run_validation(spark, settings, batch, lake_uri)
    t1 = time.perf_counter()
    if validation.status != "passed":
        raise RuntimeError(f"validation failed: {validation.errors}")
    sc.setJobGroup(job_groups[1], "bench: run_transform")
    run_transform(spark, settings, batch, lake_uri, sink=sink)
    return TimedBatch(t1 - t0, time.perf_counter() - t1, validation, sink.rows)


def _kpi_dicts(rows: Any) -> tuple[dict[str, Any], dict[Any, Any]]:
    """The sink's KpiRows as the single-node engines' {date: attrs} / {(category, date): attrs}."""
    orders = {r["order_date"]: {k: v for k, v in r.items() if k != "order_date"} for r in rows.order_rows}
    categories = {
        (r["category"], r["order_date"]): {k: v for k, v in r.items() if k not in ("category", "order_date")}
        for r in rows.category_rows
    }
    return orders, categories


def run_spark(
    batch_files: dict[str, list[str]],
    repeat: int,
    workdir: str,
    master: str,
    shuffle_partitions: int,
    driver_memory: str,
    log_path: str,
    warmup_files: dict[str, list[str]] | None = None,
    event_log_dir: str | None = None,
) -> dict[str, Any]:
    """Session start once, an optional warm-up batch, then ``repeat`` x (run_validation + run_transform).

    The warm-up batch (a small generated one) stands for the batches a long-lived
    spark-runner has already processed: JIT-compiled code paths, Delta classes loaded.
    """
    # Spark/log4j/py4j chatter goes to a file (the JVM inherits fd 2), not over the result table.
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 2)

    import delta
    import pyspark

    from cartflow.core.config import Settings
    from spark.jobs.session import build_spark

    # No aws_endpoint_url: file:// warehouse and inputs, no S3 client, no credentials needed.
    # No quarantine threshold: generated bad rows must never fail the batch.
    settings = Settings(
        spark_master=master,
        spark_shuffle_partitions=shuffle_partitions,
        spark_driver_memory=driver_memory,
        max_quarantined_share=1.0,
    )
    extra = {}
    if event_log_dir:
        Path(event_log_dir).mkdir(parents=True, exist_ok=True)
        extra = {
            "spark.eventLog.enabled": "true",
            "spark.eventLog.compress": "false",
            "spark.eventLog.dir": Path(event_log_dir).resolve().as_uri(),
        }
    started = time.perf_counter()
    spark = build_spark(settings, "cartflow-bench", extra_conf=extra)
    session_s = time.perf_counter() - started
    spark.sparkContext.setLogLevel("ERROR")
    jvm_pid = find_jvm_pid(spark)
    sc = spark.sparkContext

    def one_batch(files: dict[str, list[str]], tag: str) -> tuple[float, float, Any, Any, dict[str, int]]:
        warehouse = Path(workdir) / f"warehouse-{tag}"
        shutil.rmtree(warehouse, ignore_errors=True)
        done = timed_batch(
            spark, settings, files, f"bench-{tag}", warehouse.as_uri(), (f"bench-validate-{tag}", f"bench-kpis-{tag}")
        )
        tracker = sc.statusTracker()
        jobs = {
            # Spark jobs started from the job's own thread (Delta's background threads not counted).
            "validate_jobs": len(tracker.getJobIdsForGroup(f"bench-validate-{tag}")),
            "kpis_jobs": len(tracker.getJobIdsForGroup(f"bench-kpis-{tag}")),
        }
        shutil.rmtree(warehouse, ignore_errors=True)
        return done.validate_s, done.kpis_s, done.validation, done.rows, jobs

    warmup_s = None
    try:
        if warmup_files:
            v, k, *_ = one_batch(warmup_files, "warmup")
            warmup_s = v + k
        load_before = load1()
        cpu_before = _cpu_total(jvm_pid)
        runs: list[dict[str, float]] = []
        first: dict[str, Any] = {}
        for r in range(repeat):
            validate_s, kpis_s, validation, rows, jobs = one_batch(batch_files, str(r))
            runs.append({"validate": validate_s, "kpis": kpis_s, **jobs})
            order_kpis, category_kpis = _kpi_dicts(rows)
            result = {
                "touched": list(rows.touched_dates),
                "order_kpis": order_kpis,
                "category_kpis": category_kpis,
                "counts": {
                    ds: {"valid": t.valid_rows, "quarantined": t.quarantined_rows, "input": t.input_rows}
                    for ds, t in validation.tables.items()
                },
            }
            if r == 0:
                first = result
            elif (result["order_kpis"], result["category_kpis"]) != (first["order_kpis"], first["category_kpis"]):
                raise RuntimeError(f"repeat {r} produced different KPI rows than repeat 0")
        cpu_after = _cpu_total(jvm_pid)
        jvm_hwm = proc_status_kb(jvm_pid, "VmHWM") if jvm_pid else None
        python_hwm = proc_status_kb("self", "VmHWM")
    except Exception as exc:
        # Py4J/Spark exceptions hold locks and do not pickle back to the parent process.
        raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
    finally:
        spark.stop()
        os.close(log_fd)
    return {
        **first,
        "engine": "spark",
        "version": pyspark.__version__,
        "delta_version": getattr(delta, "__version__", None) or _dist_version("delta-spark"),
        "runs": runs,
        "session_s": session_s,
        "warmup_s": warmup_s,
        "master": master,
        "threads": int(master[len("local[") : -1]) if master.startswith("local[") and master[6:-1].isdigit() else None,
        "shuffle_partitions": shuffle_partitions,
        "driver_memory": driver_memory,
        "jvm_pid": jvm_pid,
        "cpu_s_per_run": (cpu_after - cpu_before) / repeat if cpu_before is not None and cpu_after is not None else None,
        "load1": (load_before, load1()),
        "jvm_hwm_kb": jvm_hwm,
        "python_hwm_kb": python_hwm,
    }


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
