"""Chaos: kill components at random points of a multi-batch run, then check the accounting.

Embedded stack (MiniStack + every component as its own process + the spark-runner with
real Spark). While three fixture batches go through, a seeded "monkey" SIGKILLs random
components (a crash, not a shutdown: no cleanup runs) and restarts them, as a container
restart policy would; in the first two batches it kills the spark-runner (then only its
JVM) in the middle of a Spark job, so the batch can only finish through the controller's
watchdog (stop the silent execution, re-queue the batch, run it again).

Afterwards every uploaded file must be in exactly one terminal state (none lost, none
twice), `cartflow audit` must find nothing, and the KPI tables must equal the independent
oracle for the three batches in order: a re-run never counts twice.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from cartflow.core.batch_table import BatchTable
from cartflow.local.stack import EmbeddedStack
from cartflow.ops.actions import audit
from cartflow.ops.views import batches, category_kpis, is_settled, ledger, order_kpis, upload_dir
from tests.conftest import FIXTURES
from tests.kpi_check import assert_kpis_equal_oracle
from tests.oracle import batch_from_dir

pytestmark = pytest.mark.integration

SEED = 20261129
MAX_SHARE = 0.9  # fixtures/invalid quarantines 80% of its rows on purpose
BATCHES = ("valid", "update", "invalid")
# The functions die at random; the worker (and its JVM) is killed at chosen points instead,
# since a JVM start costs ~20 s here and random worker kills would starve every batch.
RANDOM_VICTIMS = ("ingest", "debouncer", "stream-trigger", "controller")
# Per batch, what dies in the middle of its Spark job: the worker, then only its JVM. The
# last batch runs through random function kills only (each mid-job recovery costs a
# heartbeat timeout and a JVM start: ~1 min of the suite).
MID_JOB = {"valid": "worker", "update": "jvm"}


@pytest.fixture(scope="module")
def settings(settings):  # type: ignore[no-untyped-def]
    return settings.model_copy(
        update={
            "debounce_seconds": 5,  # wider than one folder's upload, even with ingest being killed
            "job_heartbeat_seconds": 20,  # the runner stamps every 5 s; 20 s of silence = lost
            "max_auto_reruns": 5,
            "max_quarantined_share": MAX_SHARE,
            "controller_interval_seconds": 1.0,
        }
    )


@pytest.fixture(scope="module")
def stack(settings, stack_resources, deps):  # type: ignore[no-untyped-def]
    with EmbeddedStack(settings) as s:
        yield s


@dataclass
class Monkey:
    """Kills and restarts components from a background thread; records what it did."""

    stack: EmbeddedStack
    deps: Any
    rng: random.Random
    kills: list[tuple[float, str, str]] = field(default_factory=list)  # (t, component, when)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    t0: float = field(default_factory=time.monotonic)

    def kill(self, name: str, when: str, down_s: float = 1.0) -> None:
        with self._lock:  # one crash at a time, so every restart is checked
            self.stack.kill(name)
            self.kills.append((round(time.monotonic() - self.t0, 1), name, when))
            time.sleep(down_s)
            self.stack.restart(name)

    def random_kills(self) -> None:
        while not self._stop.wait(self.rng.uniform(5, 15)):
            name = self.rng.choice(RANDOM_VICTIMS)
            if name == "ingest" and not self._ingest_idle():
                continue  # its in-flight messages would sit out the 120 s visibility timeout
            self.kill(name, "random", self.rng.uniform(0.5, 3))

    def kill_jvm(self, when: str) -> None:
        """Only the Spark JVM of the worker: the job fails under the runner, which reports it."""
        with self._lock:
            pgid = self.stack.processes["spark-runner"].pid
            found = subprocess.run(["pgrep", "-g", str(pgid), "java"], capture_output=True, text=True).stdout.split()
            for pid in found:
                os.kill(int(pid), signal.SIGKILL)
            self.kills.append((round(time.monotonic() - self.t0, 1), "spark JVM", when))

    def _ingest_idle(self) -> bool:
        sqs = self.deps.clients.sqs
        url = sqs.get_queue_url(QueueName=self.deps.settings.ingest_queue)["QueueUrl"]
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"])
        return int(attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"]) == 0

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.random_kills, name="chaos-monkey", daemon=True)
        thread.start()
        return thread

    def stop(self, thread: threading.Thread) -> None:
        self._stop.set()
        thread.join()


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def kill_spark_mid_job(monkey: Monkey, deps: Any, batch_files: set[str], rng: random.Random, what: str) -> None:
    """Once the batch's Spark job is running (the worker stamped the chunk), kill the worker or its JVM."""
    table = BatchTable(deps)

    def running() -> bool:
        return any(c.status == "processing" and c.worker_heartbeat_at and set(c.file_paths) <= batch_files for c in table.all())

    wait_for(running, 600, "the batch's Spark job to start")
    time.sleep(rng.uniform(1, 8))  # somewhere inside validate (or transform)
    if what == "jvm":
        monkey.kill_jvm("mid Spark job")
    else:
        monkey.kill("spark-runner", "mid Spark job", down_s=1)


OVERWRITTEN = "raw/order_lines/chaos_overwritten.csv"
GONE = "raw/order_lines/chaos_deleted.csv"


LINES_HEADER = "order_id,customer_id,order_date,category,product_id,quantity,unit_price,returned\n"
FIRST = LINES_HEADER + "CHX1,CUSTX1,2025-07-06,Books,PRODX1,1,10.00,false\n"
SECOND = FIRST.replace("1,10.00", "3,12.50") + "CHX2,CUSTX2,2025-07-07,Home,PRODX2,2,40.00,true\n"
WITHDRAWN = LINES_HEADER + "CHX3,CUSTX3,2025-07-07,Toys,PRODX3,1,5.00,false\n"


def overwrite_and_delete(deps) -> list[str]:  # type: ignore[no-untyped-def]
    """Inside the first folder's window: an overwrite and an upload deleted again (keys no
    fixture uses). Each is settled by the debouncer, which the monkey kills too."""
    s3, bucket = deps.clients.s3, deps.settings.bucket
    s3.put_object(Bucket=bucket, Key=OVERWRITTEN, Body=FIRST.encode())
    s3.put_object(Bucket=bucket, Key=OVERWRITTEN, Body=SECOND.encode())
    s3.put_object(Bucket=bucket, Key=GONE, Body=WITHDRAWN.encode())
    s3.delete_object(Bucket=bucket, Key=GONE)
    return [OVERWRITTEN, OVERWRITTEN, GONE]


def test_random_kills_during_three_batches_lose_nothing_and_count_nothing_twice(deps, stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(SEED)
    monkey = Monkey(stack, deps, rng)
    thread = monkey.start()
    uploaded: list[str] = []
    started = time.monotonic()
    try:
        for name in BATCHES:
            keys = upload_dir(deps, FIXTURES / name)
            if name == "valid":
                keys += overwrite_and_delete(deps)
            uris = {f"s3://{deps.settings.bucket}/{k}" for k in keys if k != GONE}
            uploaded += keys
            # The next folder goes up only once this one is a chunk, so each folder is one batch
            # and the batches run in upload order (the oracle's order).
            wait_for(lambda uris=uris: uris <= {p for c in batches(deps) for p in c.file_paths}, 600, f"{name} to be batched")
            if name in MID_JOB:
                kill_spark_mid_job(monkey, deps, uris, rng, MID_JOB[name])
    finally:
        monkey.stop(thread)
    wait_for(lambda: is_settled(deps, len(uploaded)), 900, "every file to reach a terminal state")
    stack.check_alive()
    elapsed = time.monotonic() - started

    rows = ledger(deps)
    per_file = Counter(r.s3_path for r in rows)
    uri = f"s3://{deps.settings.bucket}/"
    assert sorted(per_file) == sorted({uri + k for k in uploaded})  # none lost
    assert per_file.pop(uri + OVERWRITTEN) == 2 and set(per_file.values()) == {1}  # one row per upload
    totals = Counter(r.outcome for r in rows)
    # The overwrite supersedes the first upload and the delete withdraws its file, unless a
    # kill held one of their events past the window: then the first upload ran in a batch of
    # its own (the second, later, wins: same keys) or the deleted file was read before its delete.
    ends = {path: sorted(r.outcome for r in rows if r.s3_path == uri + path) for path in (OVERWRITTEN, GONE)}
    assert ends[OVERWRITTEN] in (["processed", "superseded"], ["processed", "processed"]), ends
    assert ends[GONE] in (["deleted"], ["processed"]), ends
    assert sum(totals.values()) == len(uploaded) and totals["rejected"] == 1, totals  # orders_semicolon.csv
    assert all(b.status == "done" for b in batches(deps))
    assert audit(deps, stuck_after_s=0) == []

    folders = [batch_from_dir(FIXTURES / n) for n in BATCHES]
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "second.csv").write_text(SECOND)
    (extra / "withdrawn.csv").write_text(WITHDRAWN)
    # Keys no fixture uses: where each extra file ran does not change the KPIs, whether it ran does.
    counted = [extra / "second.csv"] + ([extra / "withdrawn.csv"] if ends[GONE] == ["processed"] else [])
    folders[0] = {**folders[0], "order_lines": [*folders[0].get("order_lines", []), *counted]}
    assert_kpis_equal_oracle(order_kpis(deps), category_kpis(deps), folders, max_quarantined_share=MAX_SHARE)
    reruns = {b.batch_id: b.auto_reruns for b in batches(deps)}
    spark_kills = sum(1 for _, name, _ in monkey.kills if name in ("spark-runner", "spark JVM"))
    print(
        f"\nchaos: {len(monkey.kills)} kills in {elapsed:.0f}s ({spark_kills} of the worker or its JVM mid-job), "
        f"by component {dict(Counter(n for _, n, _ in monkey.kills))}; watchdog re-runs per batch {reruns}; "
        f"audit totals {dict(totals)}\nkills: {monkey.kills}"
    )
    assert len(monkey.kills) >= len(BATCHES) + 3
    assert sum(reruns.values()) >= 1  # at least one batch finished only through the watchdog
