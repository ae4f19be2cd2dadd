"""Markdown tables for docs/benchmarks.md from bench JSON results: ``python -m bench.mdtable FILE.json...``."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

LABELS = {"duckdb": "DuckDB", "polars": "polars", "oracle": "DuckDB test oracle", "spark": "cartflow (Spark)"}


def _total(res: dict[str, Any]) -> float:
    return statistics.median(r["validate"] + r["kpis"] for r in res["runs"])


def _stage(res: dict[str, Any], stage: str) -> float:
    return statistics.median(r[stage] for r in res["runs"])


def _peak_mb(res: dict[str, Any]) -> float:
    kb = res.get("python_hwm_kb") or 0
    if res.get("engine") == "spark":
        kb += res.get("jvm_hwm_kb") or 0
    return kb / 1024


def table(report: dict[str, Any]) -> str:
    meta, results = report["meta"], report["results"]
    rows = meta["input_rows"]
    ref = _total(results["duckdb"]) if "duckdb" in results else None
    out = [
        f"**{rows:,} {meta['shape']} rows** ({meta['input_mb']:.0f} MB CSV; {meta['started']}; "
        + ", ".join(f"{LABELS.get(n, n)} load {r['load1'][0]:.1f}→{r['load1'][1]:.1f}" for n, r in results.items())
        + ")",
        "",
        "| engine | validate s | KPIs s | total s | rows/s | peak RSS MB | CPU s | vs DuckDB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("duckdb", "polars", "oracle", "spark"):
        res = results.get(name)
        if not res:
            continue
        total = _total(res)
        label = LABELS[name]
        cpu = res.get("cpu_s_per_run")
        out.append(
            f"| {label} | {_stage(res, 'validate'):.2f} | {_stage(res, 'kpis'):.2f} | {total:.2f} | "
            f"{rows / total:,.0f} | {_peak_mb(res):,.0f} | {'-' if cpu is None else f'{cpu:.1f}'} | "
            f"{'-' if not ref else f'{total / ref:.1f}x'} |"
        )
    spark = results.get("spark")
    if spark:
        out.append("")
        out.append(
            f"Spark: session start {spark['session_s']:.1f} s, warm-up batch {spark.get('warmup_s') or 0:.1f} s, "
            f"driver memory {spark['driver_memory']}, shuffle partitions <= {spark['shuffle_partitions']} (fitted per job), Spark jobs "
            + ", ".join(f"{r['validate_jobs']}+{r['kpis_jobs']}" for r in spark["runs"])
        )
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    for name in sys.argv[1:]:
        print(table(json.loads(Path(name).read_text())))
        print()
