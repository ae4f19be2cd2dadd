"""`cartflow bench`: cartflow's Spark jobs side by side with DuckDB and polars (bench/, docs/benchmarks.md).

Registered in cartflow/cli.py with ``app.command()(bench)``. The bench package lives at
the repository root (it is not part of the installed distribution), so the command works
from a source checkout, like ``make bench``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

REPO_ROOT = Path(__file__).resolve().parent.parent


def bench(
    sizes: Annotated[str, typer.Option(help="comma-separated row counts: 100k,1M,2M (10M is opt-in)")] = "100k,1M,2M",
    shape: Annotated[str, typer.Option(help="order_lines | tables")] = "order_lines",
    engines: Annotated[str, typer.Option(help="comma-separated: spark, duckdb, polars, oracle")] = "spark,duckdb,polars",
    repeat: Annotated[int, typer.Option(help="timed runs per engine and size (median reported)")] = 1,
    cores: Annotated[int, typer.Option(help="Spark local[N], DuckDB and polars threads")] = 2,
    driver_memory: Annotated[str, typer.Option(help="Spark driver heap; auto = by size")] = "auto",
    event_log: Annotated[bool, typer.Option("--event-log", help="profile Spark's jobs from its event log")] = False,
    e2e: Annotated[bool, typer.Option("--e2e", help="end-to-end latency on the embedded stack instead")] = False,
    e2e_rows: Annotated[str, typer.Option(help="rows of the --e2e batch")] = "100k",
    debounce: Annotated[int, typer.Option(help="debounce window of the --e2e stack, seconds")] = 5,
    keep: Annotated[bool, typer.Option("--keep", help="keep the work dir (inputs, Spark logs)")] = False,
) -> None:
    """Benchmark: validation + KPIs in Spark vs DuckDB vs polars (rows/s, peak RSS, ratio), or --e2e latency."""
    if not (REPO_ROOT / "bench" / "__main__.py").is_file():
        typer.echo("cartflow bench needs a source checkout (the bench/ folder next to cartflow/)", err=True)
        raise typer.Exit(2)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    if e2e:
        from bench.e2e import main as e2e_main

        raise typer.Exit(e2e_main(["--rows", e2e_rows, "--debounce", str(debounce)] + (["--keep"] if keep else [])))
    from bench.__main__ import main as bench_main

    args = ["--sizes", sizes, "--shape", shape, "--engines", engines, "--repeat", str(repeat), "--cores", str(cores)]
    args += ["--driver-memory", driver_memory] + (["--event-log"] if event_log else []) + (["--keep"] if keep else [])
    raise typer.Exit(bench_main(args))
