"""python -m bench [--sizes 100k,1M,2M] [--shape order_lines|tables] [--engines spark,duckdb,polars] ...

For every size, one run:
1. generate a seeded raw batch of N rows with cartflow.local.fixturegen (timed, not compared);
2. DuckDB (bench/engine_duckdb.py) and polars (bench/engine_polars.py): the contract rules
   and docs/kpis.md, each implemented independently of cartflow's Spark code;
3. cartflow: run_validation + run_transform on local[2] (Delta writes included) with a warm
   SparkSession (session start and a warm-up batch reported on their own), KPI rows captured
   by an in-memory sink;
4. check that all engines produced the same KPI rows, touched dates and valid/quarantined
   counts (exit 1 without any timing if not), then print wall time, rows/s, peak RSS and the
   ratio to DuckDB; JSON results go to .cache/bench/.

Each engine runs in its own spawned process, one after the other, so peak RSS (VmHWM) is
per engine and no engine steals another's cores. ``--e2e``: the end-to-end latency
measurement on the embedded stack instead (bench/e2e.py).
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
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, get_args

from bench.common import host_info, parse_size, size_label
from bench.engines import ENGINES, run_spark
from cartflow.local.fixturegen import Shape, generate

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = "100k,1M,2M"
DEFAULT_JSON_DIR = REPO / ".cache" / "bench"
WARMUP_ROWS = 5_000

MONEY_TOL = Decimal("0.01")
RATE_TOL = Decimal("0.0001")
TOLERANCE = {
    "total_revenue": MONEY_TOL,
    "daily_revenue": MONEY_TOL,
    "avg_order_value": MONEY_TOL,
    "return_rate": RATE_TOL,
    "avg_return_rate": RATE_TOL,
}  # every other attribute is a count: exact


def auto_driver_memory(rows: int) -> str:
    """Heap for local[N]: the driver is the executor, and validation caches the checked rows."""
    if rows <= 1_000_000:
        return "2g"
    if rows <= 3_000_000:
        return "4g"
    return "8g"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes",
        default=DEFAULT_SIZES,
        help=f"comma-separated row counts, e.g. 100k,1M,2M,10M (default {DEFAULT_SIZES}; 10M is opt-in)",
    )
    ap.add_argument("--rows", type=int, default=None, help="one size in rows (overrides --sizes)")
    ap.add_argument("--shape", choices=get_args(Shape), default="order_lines")
    ap.add_argument(
        "--engines", default="spark,duckdb,polars", help="comma-separated: spark, duckdb, polars, oracle (the slower test oracle)"
    )
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per engine and size (median reported); default 1")
    ap.add_argument(
        "--no-warmup", action="store_true", help=f"no {WARMUP_ROWS:,}-row warm-up batch in the Spark process before timing"
    )
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--days", type=int, default=3, help="order dates spanned by the data (fixturegen default 3)")
    ap.add_argument("--files", type=int, default=1, help="CSV parts per dataset")
    ap.add_argument("--invalid-fraction", type=float, default=0.01, help="share of rows breaking one rule; default 0.01")
    ap.add_argument("--cores", type=int, default=2, help="Spark local[N], DuckDB and polars threads; default 2")
    ap.add_argument("--shuffle-partitions", type=int, default=None, help="default: cartflow Settings default")
    ap.add_argument("--driver-memory", default="auto", help="Spark driver heap; 'auto' = 2g up to 1M rows, 4g up to 3M, 8g above")
    ap.add_argument(
        "--event-log", action="store_true", help="write Spark's event log to the workdir and print where Spark's time went"
    )
    ap.add_argument("--workdir", type=Path, default=None, help="default: a fresh temp dir, removed afterwards")
    ap.add_argument("--keep", action="store_true", help="keep the workdir (inputs, spark.log, event logs)")
    ap.add_argument("--json-dir", type=Path, default=DEFAULT_JSON_DIR, help="where the JSON results go (default .cache/bench)")
    ap.add_argument("--e2e", action="store_true", help="measure end-to-end latency on the embedded stack instead (bench/e2e.py)")
    a = ap.parse_args(argv)
    a.size_list = [a.rows] if a.rows else [parse_size(x) for x in a.sizes.split(",") if x.strip()]
    a.engine_list = [e.strip() for e in a.engines.split(",") if e.strip()]
    unknown = set(a.engine_list) - {"spark", *ENGINES}
    if unknown:
        ap.error(f"unknown engine(s): {', '.join(sorted(unknown))}")
    if any(n < 1 for n in a.size_list) or a.repeat < 1 or a.cores < 1:
        ap.error("sizes, --repeat and --cores must be >= 1")
    return a


# ----------------------------------------------------------------------------- agreement


def compare(
    reference: dict[str, Any], other: dict[str, Any], names: tuple[str, str] = ("duckdb", "spark")
) -> tuple[list[str], list[str]]:
    """(problems, notes): problems invalidate the run; notes are in-tolerance rounding differences."""
    ref_name, name = names
    problems: list[str] = []
    notes: list[str] = []

    if list(reference["touched"]) != list(other["touched"]):
        problems.append(f"touched dates differ: {ref_name} {reference['touched']} vs {name} {other['touched']}")

    for ds, counts in reference["counts"].items():
        got = other["counts"].get(ds)
        if got is None:
            problems.append(f"{ds}: {name} validated no such dataset")
            continue
        for what in ("valid", "quarantined"):
            if counts[what] != got[what]:
                problems.append(f"{ds}: {what} rows {ref_name} {counts[what]} vs {name} {got[what]}")

    def check(label: str, expected: dict[Any, dict[str, Any]], actual: dict[Any, dict[str, Any]]) -> None:
        for k in sorted(set(expected) - set(actual), key=str):
            problems.append(f"{label} {k}: missing in {name} output")
        for k in sorted(set(actual) - set(expected), key=str):
            problems.append(f"{label} {k}: {name} has a row {ref_name} does not")
        for k in sorted(set(expected) & set(actual), key=str):
            for attr, want in expected[k].items():
                if attr not in actual[k]:
                    problems.append(f"{label} {k}.{attr}: missing in {name} row")
                    continue
                have = Decimal(str(actual[k][attr]))
                diff = abs(have - Decimal(str(want)))
                if diff > TOLERANCE.get(attr, Decimal(0)):
                    problems.append(f"{label} {k}.{attr}: {ref_name} {want} vs {name} {have}")
                elif diff:
                    notes.append(f"{label} {k}.{attr}: {ref_name} {want} vs {name} {have} (within rounding)")

    check("order_kpis", reference["order_kpis"], other["order_kpis"])
    check("category_kpis", reference["category_kpis"], other["category_kpis"])
    return problems, notes


# ----------------------------------------------------------------------------- report


def total_s(res: dict[str, Any]) -> float:
    """Median validate + KPIs seconds of an engine's runs."""
    return statistics.median(r["validate"] + r["kpis"] for r in res["runs"])


def stage_s(res: dict[str, Any], stage: str) -> float:
    return statistics.median(r[stage] for r in res["runs"])


def _rate(rows: int, seconds: float | None) -> str:
    if not seconds:
        return "-"
    per_s = rows / seconds
    return f"{per_s / 1e6:.2f}M/s" if per_s >= 1e6 else f"{per_s / 1e3:.0f}k/s"


def _mb(kb: int | None) -> str:
    return "-" if kb is None else f"{kb / 1024:,.0f} MB"


def peak_kb(res: dict[str, Any]) -> int | None:
    """Peak RSS of the engine: its Python process, plus the JVM for Spark (sum of the two peaks)."""
    if res.get("engine") == "spark":
        return (res.get("python_hwm_kb") or 0) + (res.get("jvm_hwm_kb") or 0) or None
    return res.get("python_hwm_kb")


def render(meta: dict[str, Any], results: dict[str, dict[str, Any]]) -> str:
    rows = meta["input_rows"]
    out = [
        f"== {size_label(meta['rows'])} {meta['shape']}: {rows:,} input rows, {meta['input_mb']:.0f} MB CSV, "
        f"{meta['files']} file(s)/dataset, {meta['days']} days, seed {meta['seed']}, invalid {meta['invalid_fraction']}, "
        f"{meta['cores']} cores, repeat {meta['repeat']}; generate {meta['generate_s']:.1f} s (not compared)",
    ]
    spark = results.get("spark")
    if spark:
        warm = "-" if spark.get("warmup_s") is None else f"{spark['warmup_s']:.1f} s"
        jobs = ", ".join(f"{r['validate_jobs']}+{r['kpis_jobs']}" for r in spark["runs"])
        out.append(
            f"spark {spark['version']} (delta {spark['delta_version']}) {spark['master']}, shuffle partitions "
            f"<= {spark['shuffle_partitions']} (fitted per job), driver memory {spark['driver_memory']}"
            + f"; session start {spark['session_s']:.1f} s, "
            f"warm-up batch ({WARMUP_ROWS:,} rows) {warm}; Spark jobs per run (validate+KPIs): {jobs}"
        )
    ref = results.get("duckdb")
    ref_s = total_s(ref) if ref else None
    header = (
        f"{'engine':<16}{'validate s':>11}{'KPIs s':>9}{'total s':>9}{'rows/s':>10}{'peak RSS':>11}{'CPU s':>8}{'vs DuckDB':>11}"
    )
    out += [header, "-" * len(header)]
    for name in ("duckdb", "polars", "oracle", "spark"):
        res = results.get(name)
        if not res:
            continue
        total = total_s(res)
        cpu = res.get("cpu_s_per_run")
        ratio = f"{total / ref_s:.2f}x" if ref_s else "-"
        label = {"spark": "cartflow/Spark", "oracle": "duckdb oracle"}.get(name, name)
        out.append(
            f"{label:<16}{stage_s(res, 'validate'):>11.2f}{stage_s(res, 'kpis'):>9.2f}{total:>9.2f}{_rate(rows, total):>10}"
            f"{_mb(peak_kb(res)):>11}{'-' if cpu is None else f'{cpu:.1f}':>8}{ratio:>11}"
        )
    if spark:
        out.append(
            f"  spark peak RSS = python driver {_mb(spark['python_hwm_kb'])} + JVM {_mb(spark['jvm_hwm_kb'])}; "
            f"a fresh job process would add the session start: {total_s(spark) + spark['session_s']:.1f} s"
        )
    loads = ", ".join(f"{n} {r['load1'][0]:.1f}->{r['load1'][1]:.1f}" for n, r in results.items())
    busy = any(max(r["load1"]) > meta["host_cpus"] for r in results.values())
    out.append(f"  host load (1-min) {loads}" + ("  <- machine busy: wall times inflated" if busy else ""))
    return "\n".join(out)


def render_summary(summaries: list[dict[str, Any]]) -> str:
    header = f"{'size':>6}{'rows':>12}{'duckdb s':>10}{'polars s':>10}{'spark s':>10}{'spark/duckdb':>14}{'spark s per 1M rows':>21}{'spark peak RSS':>16}"
    out = ["", "== summary (median wall s, validate + KPIs; Spark warm)", header, "-" * len(header)]
    for s in summaries:

        def f(x: float | None, fmt: str = "{:.2f}") -> str:
            return "-" if x is None else fmt.format(x)

        ratio = s["spark_s"] / s["duckdb_s"] if s.get("spark_s") and s.get("duckdb_s") else None
        per_m = s["spark_s"] / (s["rows"] / 1e6) if s.get("spark_s") else None
        out.append(
            f"{size_label(s['rows']):>6}{s['rows']:>12,}{f(s.get('duckdb_s')):>10}{f(s.get('polars_s')):>10}{f(s.get('spark_s')):>10}"
            f"{f(ratio, '{:.2f}x'):>14}{f(per_m):>21}{_mb(s.get('spark_peak_kb')):>16}"
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


def _generate(a: argparse.Namespace, rows: int, out: Path) -> tuple[dict[str, list[str]], float]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    generated = generate(a.shape, rows, out, seed=a.seed, days=a.days, files=a.files, invalid_fraction=a.invalid_fraction)
    return {str(ds): [str(p) for p in paths] for ds, paths in generated.items() if paths}, time.perf_counter() - t0


def run_size(a: argparse.Namespace, rows: int, workdir: Path, shuffle: int) -> tuple[int, dict[str, Any]]:
    """One size: generate, every engine in its own process, agreement check, table, JSON."""
    label = size_label(rows)
    print(f"[{label}] generating {rows:,} {a.shape} rows ...", file=sys.stderr, flush=True)
    batch_files, generate_s = _generate(a, rows, workdir / f"raw-{label}")
    all_files = [Path(p) for paths in batch_files.values() for p in paths]
    meta = {
        "shape": a.shape, "rows": rows, "seed": a.seed, "days": a.days, "files": a.files,
        "invalid_fraction": a.invalid_fraction, "cores": a.cores, "repeat": a.repeat,
        "generate_s": generate_s, "host_cpus": os.cpu_count(),
        "input_mb": sum(p.stat().st_size for p in all_files) / 1e6,
        # Data lines (a quoted field holding a newline would count twice; fixturegen writes none).
        "input_rows": sum(p.read_bytes().count(b"\n") - 1 for p in all_files),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }  # fmt: skip

    results: dict[str, dict[str, Any]] = {}
    for name in a.engine_list:
        if name == "spark":
            continue
        print(f"[{label}] {name} x{a.repeat} ...", file=sys.stderr, flush=True)
        results[name] = _in_process(ENGINES[name], batch_files, a.repeat, a.cores)
    if "spark" in a.engine_list:
        warmup = None
        if not a.no_warmup:
            warmup, _ = _generate(a, WARMUP_ROWS, workdir / "raw-warmup")
        log_path = workdir / f"spark-{label}.log"
        driver_memory = auto_driver_memory(rows) if a.driver_memory == "auto" else a.driver_memory
        event_dir = str(workdir / f"eventlog-{label}") if a.event_log else None
        print(
            f"[{label}] spark local[{a.cores}] x{a.repeat}, driver memory {driver_memory} (log: {log_path}) ...",
            file=sys.stderr,
            flush=True,
        )
        results["spark"] = _in_process(
            run_spark, batch_files, a.repeat, str(workdir), f"local[{a.cores}]", shuffle, driver_memory, str(log_path),
            warmup, event_dir,
        )  # fmt: skip
        if event_dir:
            from bench.profile import summarize_event_logs

            results["spark"]["profile"] = summarize_event_logs(Path(event_dir))

    problems: list[str] = []
    notes: list[str] = []
    names = list(results)
    reference = "duckdb" if "duckdb" in results else names[0]
    for name in names:
        if name != reference:
            p, n = compare(results[reference], results[name], (reference, name))
            problems += p
            notes += n
    if "spark" in results:
        spark_inputs = sum(c["input"] for c in results["spark"]["counts"].values())
        if spark_inputs != meta["input_rows"]:
            problems.append(f"spark read {spark_inputs} input rows, the files hold {meta['input_rows']}")

    a.json_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path = a.json_dir / f"{stamp}-{a.shape}-{label}.json"
    report = {"meta": meta, "results": results, "problems": problems, "notes": notes, "host": host_info()}
    json_path.write_text(json.dumps(_jsonable(report), indent=2, default=str))

    summary: dict[str, Any] = {"rows": rows, **{f"{n}_s": total_s(r) for n, r in results.items()}}
    if "spark" in results:
        summary["spark_peak_kb"] = peak_kb(results["spark"])
    if problems:
        print(f"[{label}] OUTPUT MISMATCH between engines: no timing is reported (details in {json_path}).", file=sys.stderr)
        for problem in problems[:50]:
            print(f"  {problem}", file=sys.stderr)
        if len(problems) > 50:
            print(f"  ... {len(problems) - 50} more", file=sys.stderr)
        return 1, summary

    print(render(meta, results))
    any_res = results[reference]
    counts = ", ".join(f"{ds} {c['valid']:,} valid / {c['quarantined']:,} quarantined" for ds, c in any_res["counts"].items())
    print(
        f"  agreement: OK across {', '.join(names)} - {len(any_res['order_kpis'])} order KPI rows, "
        f"{len(any_res['category_kpis'])} category KPI rows, {len(any_res['touched'])} touched dates, {counts} "
        f"({len(notes)} value(s) differ within rounding); JSON: {json_path.relative_to(REPO) if json_path.is_relative_to(REPO) else json_path}"
    )
    if "spark" in results and results["spark"].get("profile"):
        from bench.profile import render_profile

        print(render_profile(results["spark"]["profile"]))
    print(flush=True)
    return 0, summary


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.e2e:
        from bench.e2e import main as e2e_main

        return e2e_main([])
    from cartflow.core.config import Settings

    shuffle = a.shuffle_partitions or Settings().spark_shuffle_partitions
    owned = a.workdir is None
    workdir = (
        Path(tempfile.mkdtemp(prefix="cartflow-bench-")) if owned else a.workdir.resolve()
    )  # file:// URIs need an absolute path
    workdir.mkdir(parents=True, exist_ok=True)
    status = 0
    summaries = []
    try:
        for rows in a.size_list:
            rc, summary = run_size(a, rows, workdir, shuffle)
            status |= rc
            summaries.append(summary)
            if not a.keep:  # 10M rows of CSV are ~700 MB
                shutil.rmtree(workdir / f"raw-{size_label(rows)}", ignore_errors=True)
        if len(summaries) > 1 and status == 0:
            print(render_summary(summaries))
        return status
    finally:
        if owned and not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"workdir kept: {workdir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
