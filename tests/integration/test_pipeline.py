"""The whole loop on real components: MiniStack process, every function as a local process,
the spark-runner with real Spark + Delta. KPIs are checked against tests/oracle.py (DuckDB),
validated/quarantined Delta tables are read back with the independent `deltalake` reader.

The tests run in order and share one stack: valid fixtures, then invalid rows (and a file
rejected as a whole), then a batch over the quarantine threshold.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from cartflow.local.stack import EmbeddedStack
from cartflow.ops.views import batches, category_kpis, files, is_settled, order_kpis, upload_dir
from tests.conftest import FIXTURES, subscribe_queue
from tests.kpi_check import assert_kpis_equal_oracle as check_kpis
from tests.oracle import batch_from_dir

pytestmark = pytest.mark.integration
MAX_SHARE = 0.9


@pytest.fixture(scope="module")
def settings(settings):  # type: ignore[no-untyped-def]
    # One fixture folder is uploaded file by file: a window wider than the upload keeps it one batch.
    # fixtures/invalid quarantines 80% of its rows on purpose; fixtures/broken 100%.
    return settings.model_copy(update={"debounce_seconds": 5, "max_quarantined_share": MAX_SHARE})


@pytest.fixture(scope="module")
def stack(settings, stack_resources, deps):  # type: ignore[no-untyped-def]
    with EmbeddedStack(settings) as s:
        yield s


@pytest.fixture(scope="module")
def failure_queue(deps) -> str:  # type: ignore[no-untyped-def]
    return subscribe_queue(deps, deps.settings.failure_topic_arn, "test-failure-notices")


@pytest.fixture(scope="module")
def success_queue(deps) -> str:  # type: ignore[no-untyped-def]
    return subscribe_queue(deps, deps.settings.success_topic_arn, "test-success-notices")


def settle(deps, stack, n_files: int, timeout: float = 420) -> float:  # type: ignore[no-untyped-def]
    """Wait until n_files files are terminal and no batch is in flight; returns seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        stack.check_alive()
        if is_settled(deps, n_files):
            return time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"not settled after {timeout}s: {[(f.s3_path, f.state) for f in files(deps)]}")


def assert_kpis_equal_oracle(deps, batches_in_order) -> None:  # type: ignore[no-untyped-def]
    check_kpis(order_kpis(deps), category_kpis(deps), batches_in_order, max_quarantined_share=MAX_SHARE)


def delta_rows(deps, table: str):  # type: ignore[no-untyped-def]
    from deltalake import DeltaTable

    s = deps.settings
    opts = {
        "AWS_ENDPOINT_URL": s.aws_endpoint_url,
        "AWS_REGION": s.region,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }
    from deltalake import QueryBuilder

    dt = DeltaTable(f"s3://{s.bucket}/{table}", storage_options=opts)
    batch = QueryBuilder().register("t", dt).execute("SELECT * FROM t").read_all()
    columns = {name: batch.column(name).to_pylist() for name in batch.column_names}
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def raw_keys(deps, prefix: str) -> set[str]:  # type: ignore[no-untyped-def]
    resp = deps.clients.s3.list_objects_v2(Bucket=deps.settings.bucket, Prefix=prefix)
    return {o["Key"] for o in resp.get("Contents", []) if not o["Key"].endswith("/")}


def test_valid_fixtures_reach_kpis_equal_to_the_oracle(deps, stack, success_queue) -> None:  # type: ignore[no-untyped-def]
    keys = upload_dir(deps, FIXTURES / "valid")
    waited = settle(deps, stack, len(keys))
    print(f"\nlatency: last upload -> KPIs present {waited:.1f}s (debounce {deps.settings.debounce_seconds}s)")
    [batch] = batches(deps)
    assert batch.status == "done", batch
    assert_kpis_equal_oracle(deps, [batch_from_dir(FIXTURES / "valid")])

    # archived: gone from raw/, present under processed/<batch_id>/
    assert raw_keys(deps, "raw/") == set()
    assert raw_keys(deps, f"processed/{batch.batch_id}/") == {f"processed/{batch.batch_id}/{k[4:]}" for k in keys}
    msgs = deps.clients.sqs.receive_message(QueueUrl=success_queue, WaitTimeSeconds=5).get("Messages", [])
    assert any(batch.batch_id in m["Body"] for m in msgs)

    # the validation result JSON, one object per batch
    body = deps.clients.s3.get_object(Bucket=deps.settings.bucket, Key=f"validation_output/{batch.batch_id}.json")["Body"].read()
    result = json.loads(body)
    assert result["status"] == "passed" and result["tables"]["orders"]["quarantined_rows"] == 0


def test_validated_delta_tables_read_back_by_an_independent_reader(deps, stack) -> None:  # type: ignore[no-untyped-def]
    from tests.oracle import load_valid

    oracle = load_valid([batch_from_dir(FIXTURES / "valid")])
    for dataset in ("orders", "order_items", "products", "order_lines"):
        rows = delta_rows(deps, f"validated/{dataset}")
        assert len(rows) == len(oracle.valid(dataset).fetchall()), dataset
        assert {str(r["processing_date"]) for r in rows} == {batches(deps)[0].processing_date}


def test_invalid_rows_are_quarantined_with_reasons_and_the_batch_completes(deps, stack) -> None:  # type: ignore[no-untyped-def]
    known = len(files(deps))
    keys = upload_dir(deps, FIXTURES / "invalid")
    settle(deps, stack, known + len(keys))
    latest = batches(deps)[-1]
    assert latest.status == "done", latest

    expected = yaml.safe_load((FIXTURES / "invalid" / "expected_quarantine.yaml").read_text())["rows"]
    quarantined: list[tuple[str, str, int]] = []
    for dataset in ("orders", "order_items", "products", "order_lines"):
        for r in delta_rows(deps, f"quarantine/{dataset}"):
            assert r["batch_id"] == latest.batch_id
            quarantined.append(
                (r["source_file"].rsplit("/", 2)[-2] + "/" + r["source_file"].rsplit("/", 1)[-1], r["reason"], r["line_number"])
            )
    assert len(quarantined) == len(expected)
    for row in expected:
        assert any(
            f == row["file"] and line == row["line"] and reason.startswith(row["reason"]) for f, reason, line in quarantined
        ), row

    # The semicolon file was rejected as a whole, archived under rejected/, the others under processed/.
    rejected_key = "raw/orders/orders_semicolon.csv"
    states = {f.s3_path.split("/", 3)[-1]: f for f in files(deps)}
    assert states[rejected_key].state == "rejected"
    assert states[rejected_key].reason.startswith("wrong delimiter: header splits on ';'")
    assert raw_keys(deps, f"rejected/{latest.batch_id}/") == {f"rejected/{latest.batch_id}/orders/orders_semicolon.csv"}
    assert len(raw_keys(deps, f"processed/{latest.batch_id}/")) == len(keys) - 1
    assert states["raw/orders/orders_invalid.csv"].quarantined_rows > 0

    assert_kpis_equal_oracle(deps, [batch_from_dir(FIXTURES / "valid"), batch_from_dir(FIXTURES / "invalid")])


def test_a_products_only_batch_moves_category_kpis_of_every_date_it_touches(deps, stack) -> None:  # type: ignore[no-untyped-def]
    known = len(files(deps))
    keys = upload_dir(deps, FIXTURES / "recategorize")
    settle(deps, stack, known + len(keys))
    assert batches(deps)[-1].status == "done"
    assert any(r["category"] == "Denim" for r in category_kpis(deps))
    assert_kpis_equal_oracle(
        deps,
        [batch_from_dir(FIXTURES / d) for d in ("valid", "invalid", "recategorize")],
    )


def test_a_batch_over_the_quarantine_threshold_fails_with_a_notice_and_is_not_archived(deps, stack, failure_queue) -> None:  # type: ignore[no-untyped-def]
    before = {b.batch_id for b in batches(deps)}
    known = len(files(deps))
    keys = upload_dir(deps, FIXTURES / "broken")
    settle(deps, stack, known + len(keys))
    [failed] = [b for b in batches(deps) if b.batch_id not in before]
    assert failed.status == "failed"
    assert raw_keys(deps, "raw/") == set(keys)  # kept for a fix and re-upload
    assert not raw_keys(deps, f"processed/{failed.batch_id}/")
    deadline, bodies = time.monotonic() + 20, []
    while time.monotonic() < deadline and not any(failed.batch_id in b for b in bodies):
        msgs = deps.clients.sqs.receive_message(QueueUrl=failure_queue, WaitTimeSeconds=2).get("Messages", [])
        bodies += [m["Body"] for m in msgs]
    notice = next(b for b in bodies if failed.batch_id in b)
    assert "quarantined 5 of 5 rows" in notice  # says why, with the numbers
    states = {f.s3_path: f.state for f in files(deps)}
    assert all(states[f"s3://{deps.settings.bucket}/{k}"] == "failed (kept in raw/)" for k in keys)
    # The result still explains every file: the orders file would have been rejected anyway.
    body = deps.clients.s3.get_object(Bucket=deps.settings.bucket, Key=f"validation_output/{failed.batch_id}.json")["Body"]
    result = json.loads(body.read())
    assert result["status"] == "failed"
    assert {f["uri"].rsplit("/", 1)[-1]: f["status"] for f in result["files"]} == {
        "orders_missing_columns.csv": "rejected",
        "order_lines_all_invalid.csv": "accepted",
    }
    assert_kpis_equal_oracle(deps, [batch_from_dir(FIXTURES / d) for d in ("valid", "invalid", "recategorize", "broken")])
