"""The data: `cartflow seed`, `files`, `kpis`, `generate`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from cartflow.cli.choices import Shape
from cartflow.cli.context import JsonOpt, YesOpt, console, deps, fixtures_dir, print_json, require_local
from cartflow.cli.tables import files_table, kpi_tables
from cartflow.core.config import get_settings


def files(as_json: JsonOpt = False) -> None:
    """Every raw file and its state (waiting, batched, processing, archived, failed, rejected)."""
    if as_json:
        from cartflow.ops.views import files as file_states

        print_json(file_states(deps(tables=("events_table", "batch_chunks_table"))))
        return
    console.print(files_table(deps(tables=("events_table", "batch_chunks_table"))))


def kpis(as_json: JsonOpt = False) -> None:
    """Print both KPI tables."""
    if as_json:
        from cartflow.ops.views import category_kpis, order_kpis

        d = deps(tables=("order_kpis_table", "category_kpis_table"))
        print_json({"order_kpis": order_kpis(d), "category_kpis": category_kpis(d)})
        return
    for t in kpi_tables(deps(tables=("order_kpis_table", "category_kpis_table"))):
        console.print(t)


def seed(
    folder: Annotated[Path | None, typer.Argument(help="folder with <dataset>/<file>.csv", show_default="fixtures/valid")] = None,
    yes: YesOpt = False,
) -> None:
    """Upload a folder of <dataset>/<file>.csv to raw/ (local emulator; real AWS only with --yes)."""
    from cartflow.ops.views import seed_files, upload_dir

    settings = get_settings()
    folder = folder or fixtures_dir() / "valid"
    seed_files(folder)  # a bad folder is refused before anything else (exit 2)
    require_local(settings, yes, "seed")
    keys = upload_dir(deps(settings), folder)
    for key in keys:
        console.print(f"uploaded s3://{settings.bucket}/{key}", highlight=False)
    per_dataset = Counter(key.split("/")[1] for key in keys)
    counts = ", ".join(f"{name} {n}" for name, n in sorted(per_dataset.items()))
    console.print(
        f"{len(keys)} file(s) from {folder} uploaded to s3://{settings.bucket}/raw/ ({counts}); follow them: cartflow files",
        highlight=False,
        soft_wrap=True,
    )


def generate(
    shape: Annotated[Shape, typer.Option(help="input shape")] = Shape.ORDER_LINES,
    rows: Annotated[int, typer.Option(min=1, help="rows to generate")] = 1000,
    out: Annotated[Path, typer.Option(file_okay=False, help="output folder (<out>/<dataset>/...)")] = Path("generated"),
    seed_: Annotated[int, typer.Option("--seed")] = 7,
    days: Annotated[int, typer.Option(min=1, help="order dates spread over this many days")] = 3,
    invalid_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="share of rows made invalid")] = 0.0,
    files: Annotated[int, typer.Option(min=1, max=100, help="CSV parts per dataset (one batch of several uploads)")] = 1,
) -> None:
    """Generate N rows of either input shape (seeded) into <out>/<data_type>/."""
    from cartflow.local.fixturegen import generate as gen

    written = gen(shape.value, rows, out, seed=seed_, days=days, files=files, invalid_fraction=invalid_fraction)
    console.print(json.dumps({k: [str(p) for p in v] for k, v in written.items()}, indent=2))
