"""`python -m bench` end to end at a tiny size: real Spark jobs against DuckDB and polars.

Timing is not asserted (that is the benchmark's job); what must hold is that the command
runs, that the three engines agree on every count and KPI, and that a result file is written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_bench_runs_spark_duckdb_and_polars_and_they_agree(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--rows",
            "3000",
            "--engines",
            "duckdb,polars,spark",
            "--no-warmup",
            "--json-dir",
            str(tmp_path),
            "--invalid-fraction",
            "0.05",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "agreement: OK across duckdb, polars, spark" in run.stdout
    (result,) = tmp_path.glob("*.json")
    report = json.loads(result.read_text())
    assert report["problems"] == []
    spark = report["results"]["spark"]
    counts = spark["counts"]["order_lines"]
    assert counts["input"] == 3000
    assert 0 < counts["quarantined"] < 3000  # 5 % of generated rows break a rule
    assert spark["runs"][0]["validate"] > 0 and spark["runs"][0]["kpis"] > 0
