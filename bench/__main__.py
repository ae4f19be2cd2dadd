"""python -m bench [--rows N] [--shape order_lines|tables] [--repeat R] ...

1. generate a seeded raw batch with cartflow.fixturegen (timed, not compared);
2. baseline: the DuckDB oracle (tests/oracle.py) validates it and computes both KPI sets;
3. cartflow: run_validation + run_transform on local[2] with a warm SparkSession
   (session start reported on its own), KPI rows captured by an in-memory sink;
4. check both produced the same KPI rows, touched dates and valid/quarantined counts
   (exit 1 without a ratio if they do not), then print wall time, rows/s, peak RSS and
   the spark/baseline wall-time ratio.

Each engine runs in its own spawned process, one after the other, so peak RSS (VmHWM) is
per engine and neither steals the other's cores.
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
import time
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.engines import run_baseline, run_spark

MONEY_TOL = Decimal("0.01")
RATE_TOL = Decimal("0.0001")
TOLERANCE = {
    "total_revenue": MONEY_TOL,
    "daily_revenue": MONEY_TOL,
    "avg_order_value": MONEY_TOL,
    "return_rate": RATE_TOL,
    "avg_return_rate": RATE_TOL,
}  # every other attribute is a count: exact


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000, help="order lines (order_items rows for tables); default 200000")
    ap.add_argument("--shape", choices=["order_lines", "tables"], default="order_lines")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per engine (median reported); default 3")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--days", type=int, default=3, help="order dates spanned by the data (fixturegen default 3)")
    ap.add_argument("--files", type=int, default=1, help="CSV parts per dataset")
    ap.add_argument("--invalid-fraction", type=float, default=0.01, help="share of rows breaking one rule; default 0.01")
    ap.add_argument("--cores", type=int, default=2, help="Spark local[N] and DuckDB threads; default 2")
    ap.add_argument("--shuffle-partitions", type=int, default=None, help="default: cartflow Settings default")
    ap.add_argument("--driver-memory", default=None, help="default: cartflow Settings default (1g)")
    ap.add_argument("--workdir", type=Path, default=None, help="default: a fresh temp dir, removed afterwards")
    ap.add_argument("--keep", action="store_true", help="keep the workdir (inputs, spark.log)")
    ap.add_argument("--skip", choices=["baseline", "spark"], default=None, help="measure one engine only (no check)")
    ap.add_argument("--json", type=Path, default=None, help="also write all measurements to this file")
    a = ap.parse_args(argv)
    if a.rows < 1 or a.repeat < 1 or a.cores < 1:
        ap.error("--rows, --repeat and --cores must be >= 1")
    return a


# ----------------------------------------------------------------------------- agreement


def compare(baseline: dict[str, Any], spark: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(problems, notes): problems invalidate the run; notes are in-tolerance rounding differences."""
    problems: list[str] = []
    notes: list[str] = []

    if baseline["touched"] != spark["touched"]:
        problems.append(f"touched dates differ: oracle {baseline['touched']} vs spark {spark['touched']}")

    for ds, counts in baseline["counts"].items():
        got = spark["counts"].get(ds)
        if got is None:
            problems.append(f"{ds}: spark validated no such dataset")
            continue
        for what in ("valid", "quarantined"):
            if counts[what] != got[what]:
                problems.append(f"{ds}: {what} rows oracle {counts[what]} vs spark {got[what]}")

    def check(label: str, expected: dict[Any, dict[str, Any]], rows: list[dict[str, Any]], key: Any) -> None:
        actual = {key(r): r for r in rows}
        for k in sorted(set(expected) - set(actual), key=str):
            problems.append(f"{label} {k}: missing in spark output")
        for k in sorted(set(actual) - set(expected), key=str):
            problems.append(f"{label} {k}: spark has a row the oracle does not")
        for k in sorted(set(expected) & set(actual), key=str):
            for attr, want in expected[k].items():
                if attr not in actual[k]:
                    problems.append(f"{label} {k}.{attr}: missing in spark row")
                    continue
                have = Decimal(str(actual[k][attr]))
                diff = abs(have - Decimal(str(want)))
                if diff > TOLERANCE.get(attr, Decimal(0)):
                    problems.append(f"{label} {k}.{attr}: oracle {want} vs spark {have}")
                elif diff:
                    notes.append(f"{label} {k}.{attr}: oracle {want} vs spark {have} (within rounding)")

    check("order_kpis", baseline["order_kpis"], spark["order_rows"], lambda r: r["order_date"])
    check("category_kpis", baseline["category_kpis"], spark["category_rows"], lambda r: (r["category"], r["order_date"]))
    return problems, notes


# ----------------------------------------------------------------------------- report


def _median(runs: list[dict[str, float]], stage: str) -> float:
    if stage == "total":
        return statistics.median(r["validate"] + r["kpis"] for r in runs)
    return statistics.median(r[stage] for r in runs)


def _rate(rows: int, seconds: float | None) -> str:
    if not seconds:
        return "-"
    per_s = rows / seconds
    return f"{per_s / 1e6:.2f}M/s" if per_s >= 1e6 else f"{per_s / 1e3:.0f}k/s"


def _mb(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:,.0f} MB"


def render(meta: dict[str, Any], baseline: dict[str, Any] | None, spark: dict[str, Any] | None) -> str:
    rows = meta["input_rows"]
    out = [
        f"cartflow bench: shape={meta['shape']} rows={meta['rows']:,} input rows={rows:,} "
        f"({meta['input_mb']:.0f} MB CSV, {meta['files']} file(s)) days={meta['days']} seed={meta['seed']} "
        f"invalid={meta['invalid_fraction']} cores={meta['cores']} repeat={meta['repeat']}",
        f"generate (fixturegen, not compared): {meta['generate_s']:.1f} s",
    ]
    if spark:
        out.append(
            f"spark: pyspark {spark['pyspark_version']} {spark['master']}, shuffle partitions "
            f"{spark['shuffle_partitions']}, driver memory {spark['driver_memory']}"
        )
    if baseline:
        out.append(f"baseline: DuckDB {baseline['duckdb_version']} oracle, threads={baseline['threads']}")
    out.append("")
    header = f"{'stage (median of repeats)':<30}{'baseline s':>11}{'rows/s':>10}{'spark s':>10}{'rows/s':>10}{'spark/base':>12}"
    out += [header, "-" * len(header)]

    def line(label: str, b: float | None, s: float | None) -> str:
        ratio = f"{s / b:.1f}x" if (b and s) else "-"
        bs = f"{b:.2f}" if b is not None else "-"
        ss = f"{s:.2f}" if s is not None else "-"
        return f"{label:<30}{bs:>11}{_rate(rows, b) if b is not None else '-':>10}{ss:>10}{_rate(rows, s) if s is not None else '-':>10}{ratio:>12}"

    b_runs = baseline["runs"] if baseline else None
    s_runs = spark["runs"] if spark else None
    session = spark["session_s"] if spark else None
    out.append(f"{'session start (once)':<30}{'-':>11}{'-':>10}{session if session is None else f'{session:.2f}':>10}{'-':>10}{'-':>12}")
    for label, stage in (("validate", "validate"), ("KPIs (both sets)", "kpis"), ("validate + KPIs (warm)", "total")):
        out.append(line(label, _median(b_runs, stage) if b_runs else None, _median(s_runs, stage) if s_runs else None))
    if b_runs and s_runs:
        cold = s_runs[0]["validate"] + s_runs[0]["kpis"] + session
        out.append(line("first run + session start", b_runs[0]["validate"] + b_runs[0]["kpis"], cold))
    out.append("")
    for name, res in (("baseline", baseline), ("spark", spark)):
        if res:
            runs = ", ".join(f"{r['validate']:.2f}+{r['kpis']:.2f}" for r in res["runs"])
            out.append(f"{name} runs (validate+KPIs s): {runs}")
    if spark and "validate_jobs" in spark["runs"][0]:
        jobs = ", ".join(f"{r['validate_jobs']}+{r['kpis_jobs']}" for r in spark["runs"])
        out.append(f"spark jobs per run (validate+KPIs): {jobs}")
    out.append("")
    out.append("CPU seconds per run (validate + KPIs; less sensitive to a busy machine than wall time):")
    b_cpu = baseline.get("cpu_s_per_run") if baseline else None
    s_cpu = spark.get("cpu_s_per_run") if spark else None
    ratio = f", ratio {s_cpu / b_cpu:.1f}x" if (b_cpu and s_cpu) else ""
    out.append(
        f"  baseline {'-' if b_cpu is None else f'{b_cpu:.2f}'}  spark (driver + JVM) {'-' if s_cpu is None else f'{s_cpu:.2f}'}{ratio}"
    )
    loads = [f"{name} {res['load1'][0]:.1f} -> {res['load1'][1]:.1f}" for name, res in (("baseline", baseline), ("spark", spark)) if res]
    busy = any(max(res["load1"]) > meta["host_cpus"] for res in (baseline, spark) if res)
    out.append(
        f"host load (1-min avg, {meta['host_cpus']} CPUs): {', '.join(loads)}"
        + ("  <- machine busy: wall times are inflated, compare CPU seconds too" if busy else "")
    )
    out.append("")
    out.append("peak RSS (VmHWM):")
    if baseline:
        out.append(f"  baseline python process (DuckDB in-process): {_mb(baseline['python_hwm_kb'])}")
    if spark:
        total = (spark["python_hwm_kb"] or 0) + (spark["jvm_hwm_kb"] or 0)
        out.append(
            f"  spark python driver {_mb(spark['python_hwm_kb'])} + JVM (pid {spark['jvm_pid']}) "
            f"{_mb(spark['jvm_hwm_kb'])} = {_mb(total)} (sum of the two peaks)"
        )
    return "\n".join(out)


# ----------------------------------------------------------------------------- main


def _jsonable(value: Any) -> Any:
    """JSON-safe copy: tuple keys (category, date) become "category|date"."""
    if isinstance(value, dict):
        return {("|".join(map(str, k)) if isinstance(k, tuple) else str(k)): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _in_process(fn: Any, *args: Any) -> Any:
    """Run fn in a fresh spawned process (own VmHWM, own JVM) and return its result."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from cartflow.config import Settings
    from cartflow.fixturegen import generate

    defaults = Settings()
    shuffle = a.shuffle_partitions or defaults.spark_shuffle_partitions
    driver_memory = a.driver_memory or defaults.spark_driver_memory

    owned = a.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="cartflow-bench-")) if owned else a.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "spark.log"
    try:
        raw = workdir / "raw"
        shutil.rmtree(raw, ignore_errors=True)
        print(f"generating {a.rows:,} {a.shape} rows into {raw} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        generated = generate(a.shape, a.rows, raw, seed=a.seed, days=a.days, files=a.files, invalid_fraction=a.invalid_fraction)
        generate_s = time.perf_counter() - t0
        batch_files = {str(ds): [str(p) for p in paths] for ds, paths in generated.items() if paths}
        all_files = [Path(p) for paths in batch_files.values() for p in paths]
        meta = {
            "shape": a.shape, "rows": a.rows, "seed": a.seed, "days": a.days, "files": a.files,
            "invalid_fraction": a.invalid_fraction, "cores": a.cores, "repeat": a.repeat,
            "generate_s": generate_s, "host_cpus": os.cpu_count(),
            "input_mb": sum(p.stat().st_size for p in all_files) / 1e6,
            # Data lines (a quoted field holding a newline would count twice; fixturegen writes none).
            "input_rows": sum(p.read_bytes().count(b"\n") - 1 for p in all_files),
        }  # fmt: skip

        baseline = spark = None
        if a.skip != "baseline":
            print(f"baseline: DuckDB oracle x{a.repeat} ...", file=sys.stderr, flush=True)
            baseline = _in_process(run_baseline, batch_files, a.repeat, a.cores)
        if a.skip != "spark":
            print(f"spark: local[{a.cores}] x{a.repeat} (log: {log_path}) ...", file=sys.stderr, flush=True)
            spark = _in_process(
                run_spark, batch_files, a.repeat, str(workdir), f"local[{a.cores}]", shuffle, driver_memory, str(log_path)
            )

        problems: list[str] = []
        notes: list[str] = []
        if baseline and spark:
            problems, notes = compare(baseline, spark)
            spark_inputs = sum(c["input"] for c in spark["counts"].values())
            if spark_inputs != meta["input_rows"]:
                problems.append(f"spark read {spark_inputs} input rows, the files hold {meta['input_rows']}")

        if a.json:
            report = {"meta": meta, "baseline": baseline, "spark": spark, "problems": problems, "notes": notes}
            a.json.write_text(json.dumps(_jsonable(report), indent=2, default=str))

        if problems:
            print("OUTPUT MISMATCH between the DuckDB oracle and the Spark jobs: no timing is reported.", file=sys.stderr)
            for p in problems[:50]:
                print(f"  {p}", file=sys.stderr)
            if len(problems) > 50:
                print(f"  ... {len(problems) - 50} more", file=sys.stderr)
            return 1

        print(render(meta, baseline, spark))
        if baseline and spark:
            n_order, n_cat = len(spark["order_rows"]), len(spark["category_rows"])
            counts = ", ".join(f"{ds} {c['valid']:,} valid / {c['quarantined']:,} quarantined" for ds, c in baseline["counts"].items())
            print(
                f"\nagreement: OK - {n_order} order KPI rows, {n_cat} category KPI rows, "
                f"{len(spark['touched'])} touched dates, {counts} "
                f"({len(notes)} value(s) differ within rounding)"
            )
            for n in notes[:10]:
                print(f"  {n}")
        else:
            print("\nagreement: not checked (one engine skipped)")
        return 0
    finally:
        if owned and not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif a.keep or not owned:
            print(f"workdir kept: {workdir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
