"""The data contracts: `cartflow contracts check` (plain Python, no Spark)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cartflow.cli.context import console
from cartflow.core.models import DataType

contracts_app = typer.Typer(help="The data contracts (spark/jobs/contracts/*.yaml)", no_args_is_help=True)


@contracts_app.command("check")
def contracts_check(
    paths: Annotated[list[Path], typer.Argument(help="CSV files; checked together as one batch")],
    dataset: Annotated[DataType | None, typer.Option(help="dataset of every file (default: each file's folder name)")] = None,
    max_rows: Annotated[int, typer.Option(help="quarantined rows to print")] = 50,
) -> None:
    """Check local CSVs against their contracts in plain Python: the job's reasons, no Spark.

    Exit code 0 when every row is valid, 1 when a file is rejected or a row quarantined.
    """
    from cartflow.cli.reports import check_tables
    from cartflow.core.config import get_settings
    from spark.jobs.contracts import load_contracts
    from spark.jobs.rowcheck import check_files

    contracts = load_contracts(get_settings().contracts_dir)
    files = []
    for path in paths:
        if path.is_dir():
            raise typer.BadParameter(f"{path}: a folder, not a CSV file; give its files, e.g. {path}/*.csv", param_hint="PATHS")
        if not path.is_file():
            raise typer.BadParameter(f"{path}: no such file", param_hint="PATHS")
        name = dataset.value if dataset else path.resolve().parent.name
        if name not in contracts:
            known = ", ".join(sorted(contracts))
            raise typer.BadParameter(
                f"{path}: dataset {name!r} (its folder) unknown (known: {known}); use --dataset", param_hint="PATHS"
            )
        files.append((name, path))
    reports = check_files(files, contracts)
    for table in check_tables(reports, max_rows):
        console.print(table)
    references = {r.dataset for c in contracts.values() for r in c.references}
    missing = sorted(references - {name for name, _ in files})
    if any(c.references for name, _ in files for c in [contracts[name]]) and missing:
        console.print(f"note: references to {', '.join(missing)} were checked against the given files only")
    raise typer.Exit(0 if all(r.outcome == "accepted" for r in reports) else 1)
