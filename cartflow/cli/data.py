"""The data: `cartflow seed`, `files`, `kpis`, `generate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cartflow.cli.context import FIXTURES, console, deps
from cartflow.cli.tables import files_table, kpi_tables
from cartflow.core.config import get_settings


def files() -> None:
    """Every raw file and its state (waiting, batched, processing, archived, failed, rejected)."""
    console.print(files_table(deps()))


def kpis() -> None:
    """Print both KPI tables."""
    for t in kpi_tables(deps()):
        console.print(t)


def seed(folder: Annotated[Path, typer.Argument(help="folder with <data_type>/<file>.csv")] = FIXTURES / "valid") -> None:
    """Upload a fixture folder to raw/."""
    from cartflow.ops.views import upload_dir

    for key in upload_dir(deps(), folder):
        console.print(f"uploaded s3://{get_settings().bucket}/{key}")


def generate(
    shape: Annotated[str, typer.Option(help="tables | order_lines")] = "order_lines",
    rows: int = 1000,
    out: Path = Path("generated"),
    seed_: Annotated[int, typer.Option("--seed")] = 7,
    days: int = 3,
    invalid_fraction: float = 0.0,
) -> None:
    """Generate N rows of either input shape (seeded) into <out>/<data_type>/."""
    from cartflow.local.fixturegen import generate as gen

    written = gen(shape, rows, out, seed=seed_, days=days, invalid_fraction=invalid_fraction)  # type: ignore[arg-type]
    console.print(json.dumps({k: [str(p) for p in v] for k, v in written.items()}, indent=2))
