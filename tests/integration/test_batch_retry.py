"""`cartflow batches retry` against a real MiniStack: conditional failed -> pending, a new
execution name per attempt, the controller following the recorded execution, and the CLI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from cartflow.core.batch_table import BatchTable, Chunk
from cartflow.core.config import get_settings
from cartflow.core.deps import Deps, to_ddb
from cartflow.core.models import BatchStatus
from cartflow.ops.actions import RetryRefused, audit, list_batches, retry_batch, retry_command
from services.controller import control
from services.dispatch import start_next_pending

pytestmark = pytest.mark.integration
GROUP = "2025-07-08"
BATCH = "b1751968800000-2025-07-08-000"
KEY = "raw/orders/retry_me.csv"


@pytest.fixture(scope="module")
def failed_once(deps) -> Chunk:  # type: ignore[no-untyped-def]
    """A real chunk whose first execution died outside the state machine's Catch."""
    s = deps.settings
    deps.clients.s3.put_object(Bucket=s.bucket, Key=KEY, Body=b"order_id\n1\n")
    item = {
        "group_key": GROUP,
        "batch_id": BATCH,
        "status": "pending",
        "created_at": 1_751_968_800_000,
        "file_paths": [f"s3://{s.bucket}/{KEY}"],
        "file_count": 1,
    }
    deps.clients.dynamodb.put_item(TableName=s.batch_chunks_table, Item=to_ddb(item))
    event = {
        "group_key": GROUP,
        "arrival_timestamp": 1_751_968_700,
        "s3_path": item["file_paths"][0],
        "status": "batched",
        "batch_id": BATCH,
        "processed_flag": True,
    }  # what the debouncer leaves
    deps.clients.dynamodb.put_item(TableName=s.events_table, Item=to_ddb(event))
    assert start_next_pending(deps) == BATCH
    chunk = get(deps)
    assert chunk.execution_arn and chunk.execution_arn.endswith(f":{BATCH}")
    deps.clients.sfn.stop_execution(executionArn=chunk.execution_arn, error="test", cause="worker died")
    assert control(deps).finalized == {BATCH: "failed"}
    return get(deps)


@pytest.fixture
def cli_env(deps, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CARTFLOW_AWS_ENDPOINT_URL", deps.settings.aws_endpoint_url)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def get(deps: Deps) -> Chunk:
    chunk = BatchTable(deps).get(GROUP, BATCH)
    assert chunk is not None
    return chunk


def cli(*args: str) -> tuple[int, str]:
    import typer

    from cartflow.cli.batches import audit as audit_cmd
    from cartflow.cli.batches import batches_app

    app = typer.Typer()
    app.add_typer(batches_app, name="batches")
    app.command("audit")(audit_cmd)
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def test_retry_refuses_unless_failed_and_unlocked(deps, failed_once: Chunk) -> None:  # type: ignore[no-untyped-def]
    assert failed_once.status == "failed" and failed_once.attempt == 0
    with pytest.raises(RetryRefused, match="no batch"):
        retry_batch(deps, "b0-nope")
    table = BatchTable(deps)
    # The failed execution has not released the lock yet: a retry now could race it.
    assert table.acquire_lock(BATCH)
    with pytest.raises(RetryRefused, match="still holds the in-flight lock"):
        retry_batch(deps, BATCH)
    assert get(deps).status == "failed"
    table.release_lock(BATCH)


def test_retry_reopens_and_the_next_run_gets_its_own_execution(deps, failed_once: Chunk) -> None:  # type: ignore[no-untyped-def]
    result = retry_batch(deps, BATCH)
    assert (result.attempt, result.execution_name, result.previous_execution) == (1, f"{BATCH}-r1", failed_once.execution_arn)
    chunk = get(deps)
    assert (chunk.status, chunk.attempt, chunk.error, chunk.execution_arn) == ("pending", 1, None, None)
    raw = deps.clients.dynamodb.get_item(TableName=deps.settings.batch_chunks_table, Key=chunk.key)["Item"]
    assert raw["previous_executions"]["L"] == [{"S": failed_once.execution_arn}]
    assert "finished_at" not in raw and "finalized_by" not in raw
    with pytest.raises(RetryRefused, match="is pending; only failed"):
        retry_batch(deps, BATCH)

    assert start_next_pending(deps) == BATCH  # what the stream trigger does on the MODIFY record
    chunk = get(deps)
    assert chunk.execution_arn and chunk.execution_arn.endswith(f":{BATCH}-r1")
    assert deps.clients.sfn.describe_execution(executionArn=chunk.execution_arn)["status"] == "RUNNING"

    # The ARN write was lost: the controller must follow *this* attempt's execution, not the
    # first (ABORTED) one named after the bare batch id, or it would fail the retry at once.
    deps.clients.dynamodb.update_item(
        TableName=deps.settings.batch_chunks_table, Key=chunk.key, UpdateExpression="REMOVE execution_arn"
    )
    report = control(deps)
    assert report.finalized == {} and get(deps).status == "processing"
    assert get(deps).execution_arn == chunk.execution_arn  # re-recorded by the controller

    deps.clients.sfn.stop_execution(executionArn=chunk.execution_arn, error="test", cause="again")
    assert control(deps).finalized == {BATCH: "failed"}
    assert retry_batch(deps, BATCH).execution_name == f"{BATCH}-r2"


def test_cli_lists_failed_batches_and_retries_with_clear_errors(deps, failed_once: Chunk, cli_env: None) -> None:  # type: ignore[no-untyped-def]
    assert start_next_pending(deps) == BATCH
    deps.clients.sfn.stop_execution(executionArn=get(deps).execution_arn, error="test", cause="third")
    control(deps)
    assert [c.batch_id for c in list_batches(deps, BatchStatus.FAILED)] == [BATCH]

    code, out = cli("batches", "list", "--status", "failed")
    assert code == 0 and BATCH in out and retry_command(BATCH) in out
    code, out = cli("batches", "retry", BATCH)
    assert code == 0 and f"{BATCH}-r3" in out
    code, out = cli("batches", "retry", BATCH)
    assert code == 1 and "only failed batches can be retried" in out

    # A failed batch whose raw file is gone cannot be retried (it would fail validation).
    assert start_next_pending(deps) == BATCH
    deps.clients.sfn.stop_execution(executionArn=get(deps).execution_arn, error="test", cause="fourth")
    control(deps)
    deps.clients.s3.delete_object(Bucket=deps.settings.bucket, Key=KEY)
    code, out = cli("batches", "retry", BATCH)
    assert code == 1 and "raw files are gone" in out
    assert [f.kind for f in audit(deps, stuck_after_s=3600)] == ["failed_file_gone"]
    code, out = cli("audit")
    assert code == 1 and "failed_file_gone" in out


def test_retry_all_failed_retries_every_failed_batch_and_says_which_it_refused(  # type: ignore[no-untyped-def]
    deps, failed_once: Chunk, cli_env: None
) -> None:
    # Left by the test above: BATCH failed, its raw file deleted.
    assert get(deps).status == BatchStatus.FAILED.value
    code, out = cli("batches", "retry", "--all-failed")
    assert code == 1 and "raw files are gone" in out and get(deps).status == BatchStatus.FAILED.value
    deps.clients.s3.put_object(Bucket=deps.settings.bucket, Key=KEY, Body=b"order_id\n1\n")  # uploaded again
    code, out = cli("batches", "retry", "--all-failed")
    assert code == 0 and f"batch {BATCH} queued again" in out
    assert get(deps).status == BatchStatus.PENDING.value
    code, out = cli("batches", "retry", "--all-failed")
    assert code == 0 and "no failed batches" in out
    code, out = cli("batches", "retry")
    assert code != 0 and "give a BATCH_ID or --all-failed" in out
