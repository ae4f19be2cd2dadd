"""Uploads a user would make by hand, on the embedded stack (MiniStack, every component, real
Spark): overwrites and deletes inside the debounce window and while a batch runs, the same
bytes under two keys. Each upload must end in exactly one terminal state with its reason,
`cartflow audit` must find nothing, and the KPIs must equal the independent oracle over the
uploads a user expects to count (docs/delivery.md): the last upload of a key before its
batch, every upload a batch already holds, nothing deleted before its batch read it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cartflow.core.batch_table import BatchTable
from cartflow.core.config import get_settings
from cartflow.local.stack import EmbeddedStack
from cartflow.ops.actions import audit
from cartflow.ops.backfill import create_backfill, plan_backfill
from cartflow.ops.views import category_kpis, execution_state, files, is_settled, ledger, order_kpis
from tests.kpi_check import assert_kpis_equal_oracle
from tests.oracle import CONTRACTS_DIR, load_contracts

pytestmark = pytest.mark.integration

HEADER = "order_id,customer_id,order_date,category,product_id,quantity,unit_price,returned\n"


def lines(*orders: tuple[str, str, str]) -> bytes:
    """Order lines: (order_id, date, category) each, one line per order."""
    rows = [f"{oid},C-{oid},{day},{cat},P-{oid},2,10.50,false\n" for oid, day, cat in orders]
    return (HEADER + "".join(rows)).encode()


@pytest.fixture(scope="module")
def contracts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the contracts the stack validates with: a test changes a rule in it."""
    folder = tmp_path_factory.mktemp("contracts")
    for path in CONTRACTS_DIR.glob("*.yaml"):
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def settings(settings, contracts: Path):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"debounce_seconds": 4, "contracts_dir": contracts})


@pytest.fixture(scope="module")
def uploads() -> dict[str, list[dict[str, list[Path]]]]:
    """The batches the first test ran, for the oracle of the next."""
    return {}


@pytest.fixture(scope="module")
def stack(settings, stack_resources, deps):  # type: ignore[no-untyped-def]
    with EmbeddedStack(settings) as s:
        yield s


def wait_for(what: str, check: Callable[[], bool], stack: EmbeddedStack, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"not {what} after {timeout}s")


def cli(endpoint: str, *args: str) -> Result:
    """The real CLI in-process, pointed at this module's emulator."""
    from cartflow.cli.main import app

    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args), env={"CARTFLOW_AWS_ENDPOINT_URL": endpoint})
    finally:
        get_settings.cache_clear()


def test_overwrites_and_deletes_count_what_a_user_expects(deps, stack, tmp_path: Path, uploads) -> None:  # type: ignore[no-untyped-def]
    s3, bucket = deps.clients.s3, deps.settings.bucket

    def put(key: str, body: bytes) -> None:
        s3.put_object(Bucket=bucket, Key=f"raw/order_lines/{key}", Body=body)

    def saved(name: str, body: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(body)
        return path

    # --- inside one debounce window: overwrite, delete, the same bytes twice
    first, second = lines(("T1", "2025-07-06", "Books")), lines(("T2", "2025-07-06", "Books"), ("T3", "2025-07-07", "Home"))
    put("over.csv", first)
    time.sleep(0.5)
    put("over.csv", second)  # supersedes the first upload, still waiting
    put("gone.csv", lines(("T4", "2025-07-06", "Toys")))
    s3.delete_object(Bucket=bucket, Key="raw/order_lines/gone.csv")  # withdrawn before its batch
    twin = lines(("T5", "2025-07-07", "Books"))
    put("twin a.csv", twin)
    put("twin b.csv", twin)  # a copy: rejected with the key of the file it repeats
    wait_for("settled", lambda: is_settled(deps, 5), stack)
    batch1 = {"order_lines": [saved("over.csv", second), saved("twin a.csv", twin)]}

    # --- while a batch runs: overwrites of keys it holds while it validates and while it
    # transforms, a delete of another key it holds
    held, later = lines(("T6", "2025-07-08", "Home")), lines(("T6", "2025-07-08", "Books"), ("T7", "2025-07-08", "Home"))
    checked, rechecked = lines(("T9", "2025-07-08", "Books")), lines(("T9", "2025-07-08", "Home"))
    kept = lines(("T8", "2025-07-08", "Toys"))
    for key, body in (("held.csv", held), ("checked.csv", checked), ("kept.csv", kept)):
        put(key, body)
    table = BatchTable(deps)

    def running_arn() -> str | None:
        chunk = next((c for c in table.all() if c.status == "processing" and len(c.file_paths) == 3), None)
        return chunk.execution_arn if chunk else None

    wait_for("processing", lambda: running_arn() is not None, stack)
    arn = running_arn()
    wait_for("validating", lambda: execution_state(deps, arn) == "Validate", stack)
    put("checked.csv", rechecked)  # while it validates: a new upload, its own later batch
    s3.delete_object(Bucket=bucket, Key="raw/order_lines/kept.csv")  # the batch already holds it
    wait_for("transforming", lambda: execution_state(deps, arn) == "Transform", stack)
    put("held.csv", later)  # while it transforms
    wait_for("settled", lambda: is_settled(deps, 10) and all(c.status == "done" for c in table.all()), stack)
    batch2 = {"order_lines": [saved("held.csv", held), saved("checked.csv", checked), saved("kept.csv", kept)]}
    # The two later uploads: one batch or two (their keys differ, so the KPIs are the same).
    batch3 = {"order_lines": [saved("checked-2.csv", rechecked), saved("held-2.csv", later)]}

    findings = audit(deps, stuck_after_s=0)
    assert findings == [], findings
    states = sorted((f.s3_path.rsplit("/", 1)[-1], f.state) for f in files(deps))
    assert states == [
        ("checked.csv", "archived"),
        ("checked.csv", "archived"),
        ("gone.csv", "deleted"),
        ("held.csv", "archived"),
        ("held.csv", "archived"),
        ("kept.csv", "archived"),
        ("over.csv", "archived"),
        ("over.csv", "superseded"),
        ("twin a.csv", "archived"),
        ("twin b.csv", "rejected"),
    ]
    detail = {(r.s3_path.rsplit("/", 1)[-1], r.outcome): r.detail for r in ledger(deps)}
    assert "superseded by a later upload of the same key" in detail[("over.csv", "superseded")]
    assert detail[("gone.csv", "deleted")] == "deleted: deleted before its batch read it"
    assert "twin a.csv" in detail[("twin b.csv", "rejected")]
    # Every upload was its own version, and each version the batches read is gone from raw/.
    assert {f.version_id for f in files(deps) if f.s3_path.endswith("over.csv")} != {None}
    assert not s3.list_objects_v2(Bucket=bucket, Prefix="raw/order_lines/").get("Contents")
    staged = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="staging/").get("Contents", [])]
    assert staged == ["staging/"], staged  # only the folder marker: every staged copy was removed
    assert_kpis_equal_oracle(order_kpis(deps), category_kpis(deps), [batch1, batch2, batch3])
    uploads["batches"] = [batch1, batch2, batch3]
    print("\nStageRawFiles per batch (files, s): " + ", ".join(stage_seconds(deps, c) for c in table.all()))


def stage_seconds(deps, chunk) -> str:  # type: ignore[no-untyped-def]
    """How long the batch's staging copies took, from its execution history (a measurement)."""
    events = deps.clients.sfn.get_execution_history(executionArn=chunk.execution_arn, maxResults=1000)["events"]
    times = {}
    for e in events:
        name = (e.get("stateEnteredEventDetails") or e.get("stateExitedEventDetails") or {}).get("name")
        if name == "StageRawFiles":
            times[e["type"]] = e["timestamp"]
    took = (times["MapStateExited"] - times["MapStateEntered"]).total_seconds()
    return f"{len(chunk.file_paths)} files {took:.2f}"


def test_backfill_reruns_the_archived_uploads_under_a_changed_rule(deps, stack, contracts: Path, uploads) -> None:  # type: ignore[no-untyped-def]
    assert uploads, "needs the batches of the test above"
    # The rule changes: Toys is no longer a category (T8 of the second batch becomes quarantined).
    path = contracts / "order_lines.yaml"
    path.write_text(path.read_text().replace(", Toys,", ","))
    table = BatchTable(deps)
    done = [c.batch_id for c in table.all()]
    today = date.fromtimestamp(deps.now())  # the upload day: every batch's group

    dry = cli(deps.settings.aws_endpoint_url, "backfill", "--from", today.isoformat(), "--to", today.isoformat(), "--dry-run")
    assert dry.exit_code == 0 and "dry run" in dry.output and all(b in dry.output for b in done)
    assert len(table.all()) == len(done)  # nothing created
    plan = plan_backfill(table.all(), today, today)
    assert [b.source.batch_id for b in plan] == done and [b.batch_id for b in plan] == [f"{b}-bf001" for b in done]
    assert create_backfill(deps, plan) == [b.batch_id for b in plan]
    wait_for("backfilled", lambda: {c.status for c in table.all()} == {"done"} and len(table.all()) == 2 * len(done), stack)

    findings = audit(deps, stuck_after_s=0)
    assert findings == [], findings
    assert_kpis_equal_oracle(order_kpis(deps), category_kpis(deps), uploads["batches"], contracts=load_contracts(contracts))
    # A second backfill re-runs the newest run of each upload, never the replaced one.
    again = plan_backfill(table.all(), today, today)
    assert [b.source.batch_id for b in again] == [f"{b}-bf001" for b in done]
    assert [b.batch_id for b in again] == [f"{b}-bf002" for b in done]
