"""Markdown tables for docs/benchmarks.md from bench JSON results: ``python -m bench.mdtable FILE.json...``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.__main__ import peak_kb, stage_s, total_s

LABELS = {"duckdb": "DuckDB", "polars": "polars", "oracle": "DuckDB test oracle", "spark": "cartflow (Spark)"}


def table(report: dict[str, Any]) -> str:
    meta, results = report["meta"], report["results"]
    rows = meta["input_rows"]
    ref = total_s(results["duckdb"]) if "duckdb" in results else None
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
        total = total_s(res)
        label = LABELS[name]
        cpu = res.get("cpu_s_per_run")
        out.append(
            f"| {label} | {stage_s(res, 'validate'):.2f} | {stage_s(res, 'kpis'):.2f} | {total:.2f} | "
            f"{rows / total:,.0f} | {(peak_kb(res) or 0) / 1024:,.0f} | {'-' if cpu is None else f'{cpu:.1f}'} | "
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
