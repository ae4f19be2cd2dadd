"""`cartflow dashboard`: the KPI dashboard, a local web page (cartflow/dashboard/)."""

from __future__ import annotations

from typing import Annotated

import typer

from cartflow.cli.context import console, deps


def dashboard(
    host: Annotated[str, typer.Option(help="address to bind (0.0.0.0 only inside a container)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port", min=0, max=65535)] = 8050,
    refresh: Annotated[float, typer.Option(help="seconds between the page's refreshes", min=0.5)] = 5.0,
    delta: Annotated[bool, typer.Option(help="also read the Delta kpis/ and quarantine/ tables (needs deltalake)")] = True,
) -> None:
    """Serve the KPI dashboard: revenue per category, order KPIs, batch timeline, file outcomes."""
    from cartflow.dashboard.server import serve

    def ready(url: str) -> None:
        console.print(f"dashboard on {url} (Ctrl-C stops)", highlight=False)

    serve(deps(), host=host, port=port, refresh_seconds=refresh, use_delta=delta, on_ready=ready)
