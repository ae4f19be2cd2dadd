"""The local stack: `cartflow demo`, `up`, `serve`, `healthcheck`, `status`, `jars`."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.live import Live
from rich.text import Text

from cartflow.cli.choices import Component, Fidelity
from cartflow.cli.context import JsonOpt, console, deps, fixtures_dir, print_json
from cartflow.cli.tables import batches_table, files_table, kpi_tables
from cartflow.core.config import Settings, get_settings

if TYPE_CHECKING:
    from cartflow.core.deps import Deps
    from cartflow.local.stack import StackRecord
    from cartflow.ops.views import BatchProgress, BatchTrack


def status(as_json: JsonOpt = False) -> None:
    """Batches and their states."""
    if as_json:
        from cartflow.ops.views import batches

        print_json({"batches": batches(deps(tables=("batch_chunks_table",)))})
        return
    console.print(batches_table(deps(tables=("batch_chunks_table",))))


def serve(name: Annotated[Component, typer.Argument(help="the component to run")]) -> None:
    """Run one component until SIGTERM/SIGINT (what a container or `cartflow up` runs)."""
    from cartflow.local.functions import serve_forever

    serve_forever(name.value, get_settings())


def healthcheck(
    name: Annotated[Component, typer.Argument(help="the component to check")],
    max_age: Annotated[float, typer.Option(help="seconds")] = 60.0,
) -> None:
    """Exit 0 if the component's liveness file is fresh (container healthcheck)."""
    from cartflow.local.liveness import is_alive

    raise typer.Exit(0 if is_alive(get_settings().state_dir / f"{name.value}.alive", max_age) else 1)


def jars(check: Annotated[bool, typer.Option(help="only check")] = False) -> None:
    """Fetch the pinned Spark jars (Delta, hadoop-aws, AWS SDK) into the cache, once."""
    ensure_jars(get_settings(), check_only=check)


def ensure_jars(settings: Settings, check_only: bool = False) -> None:
    # The installed fetcher and its lock (package data of spark.jobs), not a path in a checkout.
    cmd = [sys.executable, "-m", "spark.fetch_jars", "--dest", str(settings.jars_dir)] + (["--check"] if check_only else [])
    if subprocess.run(cmd, check=False).returncode != 0:  # the fetcher reports its own errors
        raise typer.Exit(1)


def wait_until_settled(
    deps: Deps, expected_files: int, stack: Any, timeout: float, progress: BatchProgress | None = None, ingested: bool = False
) -> bool:
    """Until every uploaded file reached a terminal state and no batch is in flight, printing
    each batch's live state (`demo`, `wait`). ``ingested``: also until every raw/ object has
    reached the events table (uploads the ingest has not seen yet count as pending)."""
    from cartflow.ops.views import BatchProgress, batches, execution_state, files, snapshot_settled, uningested_keys

    progress = progress if progress is not None else BatchProgress()
    deadline = time.monotonic() + timeout
    with ProgressPrinter(progress) as printer:
        while True:
            if stack is not None:
                stack.check_alive()
            chunks = batches(deps)
            states = files(deps, chunks)
            printer.show(progress.observe(chunks, states, lambda c: execution_state(deps, c.execution_arn)))
            if snapshot_settled(chunks, states, expected_files) and not (ingested and uningested_keys(deps, states)):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(1.0)


def wait_until_batched(deps: Deps, expected_files: int, stack: Any, timeout: float) -> bool:
    """Until ``expected_files`` uploads are recorded and each is in a batch (or already terminal)."""
    from cartflow.ops.views import TERMINAL_FILE_STATES, files

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        states = files(deps)
        if len(states) >= expected_files and all(f.batch_id or f.state in TERMINAL_FILE_STATES for f in states):
            return True
        time.sleep(0.5)
    return False


class ProgressPrinter:
    """Batch progress on the console: one live block on a terminal, else a line per change."""

    def __init__(self, progress: BatchProgress) -> None:
        self.progress = progress
        self.live: Live | None = None

    def __enter__(self) -> ProgressPrinter:
        if console.is_terminal:
            self.live = Live(Text(), console=console, refresh_per_second=4, get_renderable=self._render)
            self.live.start()
        return self

    def _render(self) -> Text:
        return Text("\n".join(self.progress.lines()))

    def show(self, changed: list[BatchTrack]) -> None:
        if self.live is None:
            now = time.time()
            for track in changed:
                console.print(track.line(now), highlight=False)

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()


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
    with stopped_by_signals(exit_code=True), EmbeddedStack(settings) as stack:
        stack_deps = deps(stack.settings)
        console.print(f"[bold]emulator[/] {stack.settings.aws_endpoint_url}; components: {', '.join(stack.processes)}")
        uploaded = 0
        for folder in ("valid", "invalid"):
            if uploaded:
                # The next folder arrives while the previous batch runs, as uploads do: its own
                # window debounces meanwhile and the controller starts it when the first is done.
                ok &= wait_until_batched(stack_deps, uploaded, stack, timeout)
            keys = upload_dir(stack_deps, fixtures_dir() / folder)
            uploaded += len(keys)
            console.print(f"uploaded {len(keys)} files from fixtures/{folder}; debounce window {debounce}s")
        t_upload = time.monotonic()
        ok &= wait_until_settled(stack_deps, uploaded, stack, timeout)
        console.print(f"all {uploaded} uploads settled {time.monotonic() - t_upload:.1f}s after the last upload")
        console.print(files_table(stack_deps))
        for t in kpi_tables(stack_deps):
            console.print(t)
        failed = [b.batch_id for b in batches(stack_deps) if b.status != "done"]
        ok &= not failed
    console.print(f"demo {'finished' if ok else 'FAILED'} in {time.monotonic() - started:.1f}s; everything stopped")
    raise typer.Exit(0 if ok else 1)


PortOpt = Annotated[
    int | None,
    typer.Option("--port", min=1024, max=65535, help="the stack's emulator port (default: the configured endpoint's, else 4566)"),
]


@contextlib.contextmanager
def stopped_by_signals(exit_code: bool = False) -> Iterator[None]:
    """SIGTERM/SIGHUP/SIGINT stop the stack inside (its `with` unwinds, every child stops);
    then exit 0, or 128 + the signal number with ``exit_code`` (an interrupted demo)."""
    from cartflow.local.stack import StopSignal, stop_on_signals

    try:
        with stop_on_signals():
            yield
    except StopSignal as sig:
        console.print(f"{sig}: every process of the stack stopped", highlight=False)
        raise typer.Exit(128 + sig.signum if exit_code else 0) from None


def up(
    debounce: Annotated[int, typer.Option(help="debounce window, seconds")] = 10,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="run in the background; return once it is healthy")] = False,
    port: PortOpt = None,
    only: Annotated[list[Component] | None, typer.Option("--only", help="start only this component (repeatable)")] = None,
    timeout: Annotated[float | None, typer.Option(help="--detach: give up when not healthy after seconds")] = None,
    persist: Annotated[
        bool, typer.Option("--persist", help="keep tables, queues and S3 objects across restarts (a batch in flight resumes)")
    ] = False,
    fidelity: Annotated[
        Fidelity,
        typer.Option(help="embedded: the components as local processes; aws: the deployed template in the emulator"),
    ] = Fidelity.EMBEDDED,
    registry: Annotated[
        str | None, typer.Option(help="--fidelity aws: push the images to this registry HOST[/PREFIX]; default: start one")
    ] = None,
) -> None:
    """Start everything locally and keep it running (Ctrl-C, SIGTERM or `cartflow down` stops it)."""
    from cartflow.local.stack import COMPONENTS, EmbeddedStack

    settings = demo_settings(debounce)
    if port is not None:
        settings = settings.model_copy(update={"emulator_port": port})
    if fidelity is Fidelity.AWS:
        _refuse_for_aws(only=bool(only), persist=persist)
        if detach:
            _up_detached(settings, debounce, (), timeout or 1200, fidelity=fidelity, registry=registry)
            return
        _up_deployed(settings, registry)
        return
    if registry is not None:
        raise typer.BadParameter("--registry is for --fidelity aws (the embedded stack runs no image)")
    if persist:
        settings = settings.model_copy(update={"emulator_persist": True})
    components = tuple(c.value for c in only) if only else COMPONENTS
    if "spark-runner" in components:
        ensure_jars(settings)
    if detach:
        _up_detached(settings, debounce, components, timeout or 300)
        return
    with stopped_by_signals(), EmbeddedStack(settings, components) as stack:
        _print_endpoint(stack.settings.aws_endpoint_url, stack.settings.emulator_port)
        console.print("then: cartflow seed fixtures/valid ; cartflow wait ; cartflow kpis   (Ctrl-C to stop)")
        while True:
            time.sleep(2)
            stack.check_alive()


def _refuse_for_aws(*, only: bool, persist: bool) -> None:
    if only:
        raise typer.BadParameter("--only picks embedded components; --fidelity aws deploys the whole template")
    if persist:
        raise typer.BadParameter("--persist is for the embedded stack: the deployed one runs its functions in containers")


def _up_deployed(settings: Settings, registry: str | None) -> None:
    """`up --fidelity aws` in the foreground: deploy, then watch the emulator (and registry)."""
    from cartflow.local.deployed import DeployedStack

    with stopped_by_signals(), DeployedStack(settings, registry=registry) as stack:
        _print_endpoint(stack.settings.aws_endpoint_url, stack.settings.emulator_port)
        console.print(
            "then: cartflow seed fixtures/valid ; cartflow wait --timeout 600 ; cartflow kpis   "
            "(the debouncer runs once a minute, on the Scheduler; Ctrl-C to stop)"
        )
        while True:
            time.sleep(2)
            stack.check_alive()


def _print_endpoint(endpoint: str | None, port: int) -> None:
    console.print(f"cartflow is up: endpoint {endpoint}")
    console.print(
        f"export CARTFLOW_AWS_ENDPOINT_URL={endpoint} AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test", soft_wrap=True
    )
    console.print(f"logs: cartflow logs --port {port} [-f] ; stop: cartflow down --port {port}", highlight=False)


def _up_detached(
    settings: Settings,
    debounce: int,
    components: tuple[str, ...],
    timeout: float,
    fidelity: Fidelity = Fidelity.EMBEDDED,
    registry: str | None = None,
) -> None:
    """`up` as a background process of its own session; back once every process is healthy
    (with --fidelity aws: once the template is deployed)."""
    from cartflow.local.emulator import ensure_ministack
    from cartflow.local.stack import (
        SUPERVISOR_LOG,
        StackError,
        StackRecord,
        choose_port,
        free_stack_dir,
        stack_health,
        stop_stack,
    )

    aws = fidelity is Fidelity.AWS
    if aws:  # the deployed stack starts its own emulator (one that runs containers)
        settings = settings.model_copy(update={"aws_endpoint_url": None})
    port, own_emulator = choose_port(settings)
    directory = free_stack_dir(settings, port)
    if own_emulator:
        ensure_ministack(settings)  # a first install prints its line here, not in a background log
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / SUPERVISOR_LOG
    cmd = [sys.executable, "-m", "cartflow", "up", "--port", str(port), "--debounce", str(debounce)]
    cmd += [arg for name in components for arg in ("--only", name)]
    cmd += ["--persist"] if settings.emulator_persist else []
    cmd += ["--fidelity", fidelity.value] + (["--registry", registry] if registry else [])
    # The processes the record must list: the deployed stack's own registry, if it starts one.
    expected = set(components)
    if aws and registry is None:
        from cartflow.local.deployed import REGISTRY

        expected = {REGISTRY}
    # The environment says where state lives; settings the CLI changed travel as options.
    env = {**os.environ, "CARTFLOW_STATE_DIR": str(settings.state_dir)}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    console.print(f"starting the stack on port {port} in the background (pid {proc.pid}) ...", highlight=False)
    deadline = time.monotonic() + timeout
    health: dict[str, bool] = {}
    while True:
        record = StackRecord.load(directory / "stack.json")
        if proc.poll() is not None:
            raise StackError(f"the stack exited with {proc.returncode} while starting: {_last_line(log_path)} (log: {log_path})")
        if record is not None and record.supervisor == proc.pid:
            health = stack_health(record)
            if set(record.components) == expected and all(health.values()):
                break
        if time.monotonic() > deadline:
            if record is not None:
                stop_stack(record)
            else:
                proc.kill()
            waiting = [name for name, ok in health.items() if not ok] or ["the emulator and resources"]
            raise StackError(f"the stack was not healthy after {timeout:.0f}s (waiting for {', '.join(waiting)}); see {log_path}")
        time.sleep(0.5)
    _print_endpoint(record.endpoint, port)


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1].strip() if lines else "no output"


def _stack_or_none(port: int | None) -> tuple[StackRecord | None, str]:
    from cartflow.local.stack import default_key, find_stack

    settings = get_settings()
    key = str(port) if port is not None else default_key(settings)
    return find_stack(settings, port), key


def down(
    port: PortOpt = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for a graceful stop before killing")] = 60,
) -> None:
    """Stop every process of a stack started by `cartflow up` (emulator, components, Spark JVM)."""
    from cartflow.local.emulator import nothing_listens
    from cartflow.local.stack import StackError, stop_stack

    record, key = _stack_or_none(port)
    if record is None:
        console.print(f"no cartflow stack runs on port {key}: nothing to stop", highlight=False)
        return
    stopped = stop_stack(record, timeout)
    n = sum(len(pids) for pids in stopped.values())
    if record.alive():
        raise StackError(f"some processes of the stack on port {record.key} survived: {record.live_pids()}")
    own_port = record.emulator is not None and record.port is not None
    if own_port and record.port is not None and not nothing_listens(record.port):
        raise StackError(f"the stack stopped but port {record.port} is still taken by another process")
    console.print(f"stopped the stack on port {record.key}: {n} process{'es' if n != 1 else ''} ({', '.join(stopped)})")


def logs(
    component: Annotated[str | None, typer.Argument(help="emulator, up, or a component; default: all, interleaved")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines until the stack stops")] = False,
    tail: Annotated[int, typer.Option("--tail", "-n", min=0, help="only the last N lines (0: all)")] = 0,
    port: PortOpt = None,
) -> None:
    """A stack's logs: one component's, or all of them interleaved with a name prefix."""
    from cartflow.core.errors import BadInput
    from cartflow.local.stack import LogFollower, log_files, merged_lines, stack_dir

    record, key = _stack_or_none(port)
    directory = record.dir if record is not None else stack_dir(get_settings(), key)
    files = log_files(directory)
    if not files:
        raise BadInput(f"no logs of a stack on port {key} (none was started there): start one with `cartflow up --detach`")
    if component is not None:
        if component not in files:
            raise BadInput(f"no log named {component!r} for the stack on port {key}; known: {', '.join(files)}")
        files = {component: files[component]}
    width = max(len(name) for name in files)

    def emit(name: str, line: str) -> None:
        text = line if len(files) == 1 else f"{name:<{width}} | {line}"
        typer.echo(text)

    follower = LogFollower(files)  # from the current ends: what merged_lines prints next is not repeated
    for name, line in merged_lines(files, tail or None):
        emit(name, line)
    if not follow:
        return
    from cartflow.local.stack import StackRecord, StopSignal, stop_on_signals

    try:
        with stop_on_signals():
            quiet_polls = 0
            while True:
                for name, line in follower.poll():
                    emit(name, line)
                current = StackRecord.load(directory / "stack.json")
                quiet_polls = quiet_polls + 1 if current is None or not current.alive() else 0
                if quiet_polls >= 4:  # the stack stopped (its last lines are printed): so does -f
                    return
                time.sleep(0.5)
    except StopSignal:
        return


def wait(
    timeout: Annotated[float, typer.Option(help="give up (exit 1) after seconds")] = 600,
    port: PortOpt = None,
) -> None:
    """Until every uploaded file is settled, printing each batch's live state; exit 1 on timeout."""
    from cartflow.ops.views import BatchProgress

    settings = get_settings()
    if settings.aws_endpoint_url is None:
        record, _ = _stack_or_none(port)
        if record is not None:  # `cartflow up --detach` and nothing exported yet: talk to that stack
            settings = settings.model_copy(update={"aws_endpoint_url": record.endpoint})
    stack_deps = deps(settings)
    progress = BatchProgress()
    started = time.monotonic()
    if wait_until_settled(stack_deps, 0, None, timeout, progress, ingested=True):
        followed = len(progress.tracks)
        console.print(
            f"settled: {followed} batch{'es' if followed != 1 else ''} followed, "
            f"{len(progress.already_settled)} already done, in {time.monotonic() - started:.0f} s",
            highlight=False,
        )
        return
    pending = progress.pending()
    console.print(
        f"timeout after {timeout:.0f} s; still pending: {'; '.join(pending) or 'uploads not ingested yet'}", highlight=False
    )
    raise typer.Exit(1)
