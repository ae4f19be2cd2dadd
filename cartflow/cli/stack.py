"""The local stack: `cartflow demo`, `up`, `serve`, `healthcheck`, `status`, `jars`."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.live import Live

from cartflow.cli.context import FIXTURES, console, deps
from cartflow.cli.tables import batches_table, files_table, kpi_tables
from cartflow.core.config import Settings, get_settings

if TYPE_CHECKING:
    from cartflow.core.deps import Deps


def status() -> None:
    """Batches and their states."""
    console.print(batches_table(deps()))


def serve(name: Annotated[str, typer.Argument(help="ingest | stream-trigger | debouncer | controller | spark-runner")]) -> None:
    """Run one component until SIGTERM/SIGINT (what a container or `cartflow up` runs)."""
    from cartflow.local.functions import serve_forever

    serve_forever(name, get_settings())


def healthcheck(name: str, max_age: Annotated[float, typer.Option(help="seconds")] = 60.0) -> None:
    """Exit 0 if the component's liveness file is fresh (container healthcheck)."""
    from cartflow.local.liveness import is_alive

    raise typer.Exit(0 if is_alive(get_settings().state_dir / f"{name}.alive", max_age) else 1)


def jars(check: Annotated[bool, typer.Option(help="only check")] = False) -> None:
    """Fetch the pinned Spark jars (Delta, hadoop-aws, AWS SDK) into the cache, once."""
    ensure_jars(get_settings(), check_only=check)


def ensure_jars(settings: Settings, check_only: bool = False) -> None:
    # The installed fetcher and its lock (package data of spark.jobs), not a path in a checkout.
    cmd = [sys.executable, "-m", "spark.fetch_jars", "--dest", str(settings.jars_dir)] + (["--check"] if check_only else [])
    if subprocess.run(cmd, check=False).returncode != 0:  # the fetcher reports its own errors
        raise typer.Exit(1)


def wait_until_settled(deps: Deps, expected_files: int, stack: Any, timeout: float, live: Live | None) -> bool:
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


def demo(
    debounce: Annotated[int, typer.Option(help="debounce window, seconds")] = 3,
    timeout: Annotated[float, typer.Option(help="give up after seconds")] = 600,
) -> None:
    """Start everything locally, push the fixtures through, print KPIs, stop everything."""
    from cartflow.local.stack import EmbeddedStack
    from cartflow.ops.views import batches, upload_dir

    started = time.monotonic()
    settings = demo_settings(debounce)
    ensure_jars(settings)
    ok = True
    with EmbeddedStack(settings) as stack:
        stack_deps = deps(stack.settings)
        console.print(f"[bold]emulator[/] {stack.settings.aws_endpoint_url}; components: {', '.join(stack.processes)}")
        uploaded = 0
        for folder in ("valid", "invalid"):
            keys = upload_dir(stack_deps, FIXTURES / folder)
            uploaded += len(keys)
            t_upload = time.monotonic()
            console.print(f"uploaded {len(keys)} files from fixtures/{folder}; debounce window {debounce}s")
            with Live(batches_table(stack_deps), console=console, refresh_per_second=4) as live:
                ok &= wait_until_settled(stack_deps, uploaded, stack, timeout, live)
            console.print(f"fixtures/{folder}: settled {time.monotonic() - t_upload:.1f}s after the last upload")
        console.print(files_table(stack_deps))
        for t in kpi_tables(stack_deps):
            console.print(t)
        failed = [b.batch_id for b in batches(stack_deps) if b.status != "done"]
        ok &= not failed
    console.print(f"demo {'finished' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s; everything stopped")
    raise typer.Exit(0 if ok else 1)


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
