"""`cartflow` command line: demo, up, status, files, kpis, serve, resources, seed, ..."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cartflow.core.config import Settings, get_settings

app = typer.Typer(help="cartflow: event-driven e-commerce data pipeline", no_args_is_help=True, add_completion=False)
resources_app = typer.Typer(help="The resource spec", no_args_is_help=True)
app.add_typer(resources_app, name="resources")
contracts_app = typer.Typer(help="The data contracts (spark/jobs/contracts/*.yaml)", no_args_is_help=True)
app.add_typer(contracts_app, name="contracts")
from cartflow.cli.ops import audit, batches_app, guard_commands  # noqa: E402  operator commands

app.add_typer(batches_app, name="batches")
app.command()(audit)
try:  # `cartflow images ...` needs the docker SDK (extra [release]); the runtime images don't
    from cartflow.infra.images import images_app

    app.add_typer(images_app, name="images")
except ImportError:  # pragma: no cover - minimal installs
    pass
from cartflow.infra.ship import register as _register_deploy  # noqa: E402  `cartflow deploy`, docs/deploy.md

_register_deploy(app)
console = Console()

# The sample uploads ship as package data of `fixtures` (the repo folder in an editable install).
FIXTURES = Path(str(resources.files("fixtures")))


def _deps(settings: Settings | None = None) -> Any:
    from cartflow.core.deps import Deps

    return Deps.from_settings(settings or get_settings())


# ----------------------------------------------------------------------------- tables


def batches_table(deps: Any) -> Table:
    from cartflow.ops.views import batches

    t = Table(title="batches")
    for col in ("batch_id", "status", "files", "execution", "error"):
        t.add_column(col, overflow="fold")
    colors = {"done": "green", "failed": "red", "processing": "yellow", "pending": "cyan"}
    for c in batches(deps):
        t.add_row(
            c.batch_id,
            f"[{colors.get(c.status, 'white')}]{c.status}",
            str(len(c.file_paths)),
            (c.execution_arn or "").rsplit(":", 1)[-1],
            (c.error or "")[:60],
        )
    return t


def files_table(deps: Any) -> Table:
    from cartflow.ops.views import files

    t = Table(title=f"raw files (s3://{deps.settings.bucket}/)")
    for col in ("key", "state", "batch_id", "quarantined rows", "reason"):
        t.add_column(col, overflow="fold")
    for f in files(deps):
        key = f.s3_path.split("/", 3)[-1]
        quarantined = "" if f.quarantined_rows is None else str(f.quarantined_rows)
        t.add_row(key, f.state, f.batch_id or "", quarantined, f.reason or "")
    return t


def kpi_tables(deps: Any) -> list[Table]:
    from cartflow.ops.views import category_kpis, order_kpis

    ot = Table(title=f"OrderKPIs ({deps.settings.order_kpis_table})")
    ocols = ("order_date", "total_orders", "total_revenue", "total_items_sold", "return_rate", "unique_customers")
    for col in ocols:
        ot.add_column(col, justify="right")
    for r in order_kpis(deps):
        ot.add_row(*(str(r.get(c, "")) for c in ocols))
    ct = Table(title=f"CategoryKPIs ({deps.settings.category_kpis_table})")
    ccols = ("category", "order_date", "daily_revenue", "avg_order_value", "avg_return_rate")
    for col in ccols:
        ct.add_column(col, justify="right")
    for r in category_kpis(deps):
        ct.add_row(*(str(r.get(c, "")) for c in ccols))
    return [ot, ct]


# ----------------------------------------------------------------------------- commands


@app.command()
def status() -> None:
    """Batches and their states."""
    console.print(batches_table(_deps()))


@app.command()
def files() -> None:
    """Every raw file and its state (waiting, batched, processing, archived, failed, rejected)."""
    console.print(files_table(_deps()))


@app.command()
def kpis() -> None:
    """Print both KPI tables."""
    for t in kpi_tables(_deps()):
        console.print(t)


@app.command()
def seed(folder: Annotated[Path, typer.Argument(help="folder with <data_type>/<file>.csv")] = FIXTURES / "valid") -> None:
    """Upload a fixture folder to raw/."""
    from cartflow.ops.views import upload_dir

    for key in upload_dir(_deps(), folder):
        console.print(f"uploaded s3://{get_settings().bucket}/{key}")


@resources_app.command("apply")
def resources_apply() -> None:
    """Create/update every resource in the spec (idempotent)."""
    from cartflow.infra import apply_resources

    deps = _deps()
    for name, ref in apply_resources(deps.settings, deps.clients).items():
        console.print(f"{name} -> {ref}")


@resources_app.command("iam")
def resources_iam(principal: Annotated[list[str] | None, typer.Argument(help="e.g. ingest spark-job")] = None) -> None:
    """Print the least-privilege IAM policy of each principal, derived from the resource spec."""
    from cartflow.infra.iam import policies

    docs = policies(get_settings().spec_values())
    sys.stdout.write(json.dumps({k: v for k, v in docs.items() if not principal or k in principal}, indent=2) + "\n")


@app.command("render-state-machine")
def render_state_machine(target: Annotated[str, typer.Option(help="local | aws")] = "local") -> None:
    """Print the state machine definition for a target (activity ARNs derived from settings)."""
    from cartflow.infra.apply import state_machine_params
    from orchestrator.render import render_state_machine as render

    s = get_settings()
    arns = {a: s.activity_arn(a) for a in (s.validate_activity, s.transform_activity)}
    params: dict[str, object] = state_machine_params(s.spec_values(), arns)
    if target == "aws":
        params.update(
            retry_interval_seconds=30,
            retry_max_attempts=3,
            retry_backoff_rate=2.0,
            ecs_cluster=s.ecs_cluster,
            ecs_task_definition=s.ecs_task_definition,
            ecs_container_name=s.ecs_container_name,
            subnets=s.ecs_subnets,
            security_groups=s.ecs_security_groups,
        )
    sys.stdout.write(render(target, params) + "\n")


@app.command()
def serve(name: Annotated[str, typer.Argument(help="ingest | stream-trigger | debouncer | controller | spark-runner")]) -> None:
    """Run one component until SIGTERM/SIGINT (what a container or `cartflow up` runs)."""
    from cartflow.local.functions import serve_forever

    serve_forever(name, get_settings())


@app.command()
def healthcheck(name: str, max_age: Annotated[float, typer.Option(help="seconds")] = 60.0) -> None:
    """Exit 0 if the component's liveness file is fresh (container healthcheck)."""
    from cartflow.local.liveness import is_alive

    raise typer.Exit(0 if is_alive(get_settings().state_dir / f"{name}.alive", max_age) else 1)


@app.command()
def jars(check: Annotated[bool, typer.Option(help="only check")] = False) -> None:
    """Fetch the pinned Spark jars (Delta, hadoop-aws, AWS SDK) into the cache, once."""
    ensure_jars(get_settings(), check_only=check)


def ensure_jars(settings: Settings, check_only: bool = False) -> None:
    # The installed fetcher and its lock (package data of spark.jobs), not a path in a checkout.
    cmd = [sys.executable, "-m", "spark.fetch_jars", "--dest", str(settings.jars_dir)] + (["--check"] if check_only else [])
    if subprocess.run(cmd).returncode != 0:
        raise typer.Exit(1)


@app.command()
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


# ----------------------------------------------------------------------------- demo / up


def wait_until_settled(deps: Any, expected_files: int, stack: Any, timeout: float, live: Live | None) -> bool:
    """Until every uploaded file reached a terminal state and no batch is in flight."""
    from cartflow.ops.views import is_settled

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        if live is not None:
            live.update(batches_table(deps))
        if is_settled(deps, expected_files):
            return True
        time.sleep(0.5)
    return False


def demo_settings(debounce: int) -> Settings:
    s = get_settings()
    # fixtures/invalid quarantines 80% of its rows on purpose (to show every rule); let it through.
    share = max(s.max_quarantined_share, 0.9)
    return s.model_copy(
        update={
            "debounce_seconds": debounce,
            "debouncer_interval_seconds": 1.0,
            "controller_interval_seconds": 2.0,
            "max_quarantined_share": share,
        }
    )


@app.command()
def demo(
    debounce: Annotated[int, typer.Option(help="debounce window, seconds")] = 3,
    timeout: Annotated[float, typer.Option(help="give up after seconds")] = 600,
) -> None:
    """Start everything locally, push the fixtures through, print KPIs, stop everything."""
    from cartflow.core.deps import Deps
    from cartflow.local.stack import EmbeddedStack
    from cartflow.ops.views import batches, upload_dir

    started = time.monotonic()
    settings = demo_settings(debounce)
    ensure_jars(settings)
    ok = True
    with EmbeddedStack(settings) as stack:
        deps = Deps.from_settings(stack.settings)
        console.print(f"[bold]emulator[/] {stack.settings.aws_endpoint_url}; components: {', '.join(stack.processes)}")
        uploaded = 0
        for folder in ("valid", "invalid"):
            keys = upload_dir(deps, FIXTURES / folder)
            uploaded += len(keys)
            t_upload = time.monotonic()
            console.print(f"uploaded {len(keys)} files from fixtures/{folder}; debounce window {debounce}s")
            with Live(batches_table(deps), console=console, refresh_per_second=4) as live:
                ok &= wait_until_settled(deps, uploaded, stack, timeout, live)
            console.print(f"fixtures/{folder}: settled {time.monotonic() - t_upload:.1f}s after the last upload")
        console.print(files_table(deps))
        for t in kpi_tables(deps):
            console.print(t)
        failed = [b.batch_id for b in batches(deps) if b.status != "done"]
        ok &= not failed
    console.print(f"demo {'finished' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s; everything stopped")
    raise typer.Exit(0 if ok else 1)


@app.command()
def up(debounce: Annotated[int, typer.Option(help="debounce window, seconds")] = 10) -> None:
    """Start everything locally and keep it running (Ctrl-C stops it)."""
    from cartflow.local.stack import EmbeddedStack

    settings = demo_settings(debounce)
    ensure_jars(settings)
    stop = threading.Event()
    with EmbeddedStack(settings) as stack:
        console.print(f"cartflow is up: endpoint {stack.settings.aws_endpoint_url}")
        console.print(
            f"export CARTFLOW_AWS_ENDPOINT_URL={stack.settings.aws_endpoint_url} AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test"
        )
        console.print("then: cartflow seed fixtures/valid ; cartflow status ; cartflow kpis   (Ctrl-C to stop)")
        try:
            while not stop.wait(2):
                stack.check_alive()
        except KeyboardInterrupt:
            pass


# ----------------------------------------------------------------------------- contracts and validation


@contracts_app.command("check")
def contracts_check(
    paths: Annotated[list[Path], typer.Argument(help="CSV files; checked together as one batch")],
    dataset: Annotated[str | None, typer.Option(help="dataset of every file (default: each file's folder name)")] = None,
    max_rows: Annotated[int, typer.Option(help="quarantined rows to print")] = 50,
) -> None:
    """Check local CSVs against their contracts in plain Python: the job's reasons, no Spark.

    Exit code 0 when every row is valid, 1 when a file is rejected or a row quarantined.
    """
    from cartflow.cli.reports import check_tables
    from spark.jobs.contracts import load_contracts
    from spark.jobs.rowcheck import check_files

    contracts = load_contracts()
    files = []
    for path in paths:
        name = dataset or path.resolve().parent.name
        if name not in contracts:
            known = ", ".join(sorted(contracts))
            raise typer.BadParameter(f"{path}: dataset {name!r} unknown (known: {known}); use --dataset", param_hint="PATHS")
        if not path.is_file():
            raise typer.BadParameter(f"{path}: no such file", param_hint="PATHS")
        files.append((name, path))
    reports = check_files(files, contracts)
    for table in check_tables(reports, max_rows):
        console.print(table)
    references = {r.dataset for c in contracts.values() for r in c.references}
    missing = sorted(references - {name for name, _ in files})
    if any(c.references for name, _ in files for c in [contracts[name]]) and missing:
        console.print(f"note: references to {', '.join(missing)} were checked against the given files only")
    raise typer.Exit(0 if all(r.outcome == "accepted" for r in reports) else 1)


def show_batch(batch_id: str) -> None:
    """The validation report of one batch: counts per dataset and rule, files, rejected reasons."""
    from cartflow.cli.reports import validation_tables
    from cartflow.ops.views import validation_result

    try:
        result = validation_result(_deps(), batch_id)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="BATCH_ID") from None
    if result is None:
        console.print(f"[red]no validation result for batch {batch_id} (not validated yet, or unknown)[/]")
        raise typer.Exit(1)
    for table in validation_tables(result):
        console.print(table)


guard_commands(app)  # endpoint down / table missing / bad CARTFLOW_* -> one line on stderr, exit 1


def main() -> None:
    app()
