"""`cartflow up --persist`: the stack stops in the middle of a batch and starts again; the
batch completes with nothing lost and nothing counted twice.

The stack owns its emulator here (persistence is the emulator's: S3 objects written through
to disk, the other services' state saved on its clean stop and loaded at start), so this
module does not use the shared per-module emulator.
"""

from __future__ import annotations

import time

import pytest

from cartflow.core.batch_table import BatchTable
from cartflow.core.config import Settings
from cartflow.core.deps import Deps
from cartflow.local.emulator import free_port
from cartflow.local.stack import EmbeddedStack
from cartflow.ops.actions import audit
from cartflow.ops.views import category_kpis, files, is_settled, order_kpis, upload_dir
from tests.conftest import FIXTURES
from tests.kpi_check import assert_kpis_equal_oracle
from tests.oracle import batch_from_dir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def persistent(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return base_settings.model_copy(
        update={
            "state_dir": tmp_path_factory.mktemp("persist-state"),
            "emulator_port": free_port(),
            "emulator_persist": True,
            "debounce_seconds": 5,
            "debouncer_interval_seconds": 0.5,
            "controller_interval_seconds": 1.0,
            "job_retry_interval_seconds": 1,
            "job_heartbeat_seconds": 20,  # a batch whose worker went away is re-queued after this
        }
    )


def _deps(stack: EmbeddedStack) -> Deps:
    return Deps.from_settings(stack.settings)


def test_a_restart_in_the_middle_of_a_batch_loses_nothing_and_counts_nothing_twice(persistent: Settings) -> None:
    # The first run has no spark-runner: its batch waits in Validate for a worker when the
    # stack stops (the state a crash or a stop mid-batch leaves), without a JVM start.
    with EmbeddedStack(persistent, ("ingest", "stream-trigger", "debouncer", "controller")) as first:
        deps = _deps(first)
        keys = upload_dir(deps, FIXTURES / "valid")
        table = BatchTable(deps)
        deadline = time.monotonic() + 300
        while not any(c.status == "processing" for c in table.all()):
            first.check_alive()
            assert time.monotonic() < deadline, "no batch started"
            time.sleep(0.2)
        before = sorted(c.batch_id for c in table.all())
        endpoint = first.settings.aws_endpoint_url
    # Everything stopped mid-batch. The same stack again, with its saved state.
    with EmbeddedStack(persistent) as second:
        assert second.settings.aws_endpoint_url == endpoint
        deps = _deps(second)
        table = BatchTable(deps)
        assert sorted(c.batch_id for c in table.all()) == before, "the batches survived the restart"
        deadline = time.monotonic() + 420
        while not is_settled(deps, len(keys)):
            second.check_alive()
            assert time.monotonic() < deadline, [(f.s3_path, f.state) for f in files(deps)]
            time.sleep(0.5)
        assert {c.status for c in table.all()} == {"done"}, [(c.batch_id, c.status, c.error) for c in table.all()]
        assert sum(c.auto_reruns for c in table.all()) >= 1  # the interrupted batch ran again
        assert audit(deps, stuck_after_s=0) == []
        assert sorted(f.s3_path.split("/", 3)[-1] for f in files(deps)) == sorted(keys)
        assert_kpis_equal_oracle(order_kpis(deps), category_kpis(deps), [batch_from_dir(FIXTURES / "valid")])
