"""python -m bench.history [--batches 6] [--rows 5000] [--shape tables] [--conf KEY=VALUE ...]: small batches into a lake with history.

The main bench writes one batch into an empty lake, where Delta has no log to replay. A
long-lived spark-runner instead keeps one SparkSession and writes every batch into the
same lake. This runs that: one session, a warm-up batch into a lake of its own, then
``--batches`` seeded batches (a different seed each, the same order dates, so later
batches replace KPIs of dates earlier ones wrote) through run_validation + run_transform
into ONE lake, and reports per batch: Spark jobs, summed task time (event log), Delta
snapshot jobs among them, driver wall time, and CPU seconds of driver + JVM.

``--shape tables`` runs the three-table shape (orders, order_items, products) instead of
order_lines; ``--conf`` adds Spark settings on top of spark_conf (for A/B runs of one setting).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

from bench.engines import _cpu_total, find_jvm_pid, load1, timed_batch
from cartflow.local.fixturegen import Shape, generate

REPO = Path(__file__).resolve().parents[1]
# Delta's job description of a state reconstruction. The description stays on the thread,
# so later jobs of the same write carry it too: an upper bound, the job and task counts are exact.
SNAPSHOT_JOB = "Compute snapshot"


def _batch_files(workdir: Path, tag: str, shape: Shape, rows: int, seed: int) -> dict[str, list[str]]:
    out = workdir / f"raw-{tag}"
    generated = generate(shape, rows, out, seed=seed, invalid_fraction=0.01)
    return {str(ds): [str(p) for p in paths] for ds, paths in generated.items() if paths}


def run_history(workdir: str, shape: Shape, batches: int, rows: int, conf: dict[str, str], log_path: str) -> dict[str, Any]:
    """In its own process: one session, a warm-up batch, then ``batches`` batches into one lake."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 2)  # Spark's log4j chatter goes to the file, not over the report

    from cartflow.core.config import Settings
    from spark.jobs.session import build_spark

    root = Path(workdir)
    event_dir = root / "eventlog"
    event_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(spark_master="local[2]", max_quarantined_share=1.0)
    extra = {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.compress": "false",
        "spark.eventLog.dir": event_dir.resolve().as_uri(),
        **conf,
    }
    spark = build_spark(settings, "cartflow-bench-history", extra_conf=extra)
    spark.sparkContext.setLogLevel("ERROR")
    jvm_pid = find_jvm_pid(spark)

    def one_batch(files: dict[str, list[str]], batch_id: str, lake: Path) -> dict[str, Any]:
        load_before, cpu_before = load1(), _cpu_total(jvm_pid)
        groups = (f"history-validate-{batch_id}", f"history-kpis-{batch_id}")
        done = timed_batch(spark, settings, files, batch_id, lake.as_uri(), groups)
        cpu_after = _cpu_total(jvm_pid)
        validation, rows = done.validation, done.rows
        return {
            "batch_id": batch_id,
            "validate_s": done.validate_s,
            "kpis_s": done.kpis_s,
            "cpu_s": cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None,
            "load1": (load_before, load1()),
            "touched": list(rows.touched_dates),
            "order_kpis": [{k: str(v) for k, v in r.items()} for r in rows.order_rows],
            "category_kpis": [{k: str(v) for k, v in r.items()} for r in rows.category_rows],
            "valid_rows": sum(t.valid_rows for t in validation.tables.values()),
        }

    try:
        warmup_lake = root / "lake-warmup"
        one_batch(_batch_files(root, "warmup", shape, 2_000, seed=1), "b0000-warmup", warmup_lake)
        shutil.rmtree(warmup_lake, ignore_errors=True)
        lake = root / "lake"
        runs = []
        for i in range(batches):
            files = _batch_files(root, f"b{i}", shape, rows, seed=100 + i)
            runs.append(one_batch(files, f"b{i + 1:04d}", lake))
            shutil.rmtree(root / f"raw-b{i}", ignore_errors=True)
    except Exception as exc:  # Py4J exceptions do not pickle back to the parent process
        raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
    finally:
        spark.stop()  # flushes the event log
        os.close(log_fd)
    return {"runs": runs, "event_dir": str(event_dir)}


def _profile(event_dir: Path, runs: list[dict[str, Any]]) -> None:
    """Add per-batch job counts and task time from the event log to ``runs``."""
    from bench.profile import summarize_event_logs

    groups = summarize_event_logs(event_dir)
    for run in runs:
        for stage in ("validate", "kpis"):
            jobs = groups.get(f"history-{stage}-{run['batch_id']}", {"jobs": []})["jobs"]
            run[f"{stage}_jobs"] = len(jobs)
            run[f"{stage}_tasks"] = sum(j["tasks"] for j in jobs)
            run[f"{stage}_task_s"] = sum(j["task_ms"] for j in jobs) / 1000
            run[f"{stage}_snapshot_jobs"] = sum(SNAPSHOT_JOB in (j.get("description") or "") for j in jobs)
            run[f"{stage}_snapshot_s"] = sum(j["wall_ms"] for j in jobs if SNAPSHOT_JOB in (j.get("description") or "")) / 1000
            run[f"{stage}_calls"] = [
                (j["id"], round(j["wall_ms"] / 1000, 2), j["tasks"], j.get("description") or j["call_site"]) for j in jobs
            ]


def render(runs: list[dict[str, Any]], conf: dict[str, str]) -> str:
    head = "| batch | jobs (validate + KPIs) | snapshot jobs | tasks | task s | wall s (validate + KPIs) | CPU s | load |"
    lines = [f"conf: {conf or 'cartflow defaults'}", head, "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        lines.append(
            f"| {r['batch_id']} | {r['validate_jobs'] + r['kpis_jobs']} ({r['validate_jobs']} + {r['kpis_jobs']}) | "
            f"{r['validate_snapshot_jobs'] + r['kpis_snapshot_jobs']} | {r['validate_tasks'] + r['kpis_tasks']} | "
            f"{r['validate_task_s'] + r['kpis_task_s']:.1f} | "
            f"{r['validate_s'] + r['kpis_s']:.1f} ({r['validate_s']:.1f} + {r['kpis_s']:.1f}) | "
            f"{r['cpu_s']:.1f} | {r['load1'][0]:.1f}-{r['load1'][1]:.1f} |"
        )
    later = runs[1:] or runs  # the first batch writes into an empty lake

    def med(key: Any) -> float:
        return statistics.median(key(r) for r in later)

    lines.append(
        f"median of batches 2..{len(runs)}: {med(lambda r: r['validate_jobs'] + r['kpis_jobs']):.0f} jobs, "
        f"{med(lambda r: r['validate_snapshot_jobs'] + r['kpis_snapshot_jobs']):.0f} snapshot jobs, "
        f"{med(lambda r: r['validate_tasks'] + r['kpis_tasks']):.0f} tasks, "
        f"task {med(lambda r: r['validate_task_s'] + r['kpis_task_s']):.1f} s, "
        f"wall {med(lambda r: r['validate_s'] + r['kpis_s']):.1f} s, CPU {med(lambda r: r['cpu_s']):.1f} s"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--rows", type=int, default=5_000)
    ap.add_argument("--shape", choices=get_args(Shape), default="order_lines")
    ap.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark setting (repeatable)")
    ap.add_argument("--calls", action="store_true", help="also print every Spark job of the last batch")
    ap.add_argument("--keep", action="store_true", help="keep the workdir (event log, Spark log)")
    ap.add_argument("--json-dir", type=Path, default=REPO / ".cache" / "bench")
    a = ap.parse_args(argv)
    conf = dict(item.split("=", 1) for item in a.conf)
    workdir = Path(tempfile.mkdtemp(prefix="cartflow-history-"))
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            result = pool.submit(run_history, str(workdir), a.shape, a.batches, a.rows, conf, str(workdir / "spark.log")).result()
        runs = result["runs"]
        _profile(Path(result["event_dir"]), runs)
    finally:
        if a.keep:
            print(f"workdir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(render(runs, conf))
    if a.calls:
        last = runs[-1]
        for stage in ("validate", "kpis"):
            for job in last[f"{stage}_calls"]:
                print(f"  {stage} job {job[0]:>4} {job[1]:>6.2f} s tasks {job[2]:>3}  {job[3]}")
    a.json_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (a.json_dir / f"{stamp}-history.json").write_text(json.dumps({"conf": conf, "runs": runs}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
