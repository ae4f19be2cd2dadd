"""`cartflow batches show ID` against a real emulator: the validation report as tables."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from cartflow.cli import app
from cartflow.core.config import get_settings
from cartflow.core.models import FileOutcome, TableResult, ValidationResult

pytestmark = pytest.mark.integration


@pytest.fixture
def cli_env(deps, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CARTFLOW_AWS_ENDPOINT_URL", deps.settings.aws_endpoint_url)
    monkeypatch.setenv("COLUMNS", "200")  # rich folds long cells in a narrow terminal
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_batches_show_renders_counts_rules_files_and_reasons(deps, cli_env) -> None:  # type: ignore[no-untyped-def]
    bucket = deps.settings.bucket
    result = ValidationResult(
        batch_id="b-show-1",
        processing_date="2026-11-29",
        status="passed",
        shape="order_lines",
        processing_dates=["2026-11-29"],
        quarantined_share=0.25,
        max_quarantined_share=0.5,
        tables={
            "order_lines": TableResult(
                contract_version=1,
                files=1,
                rejected_files=1,
                input_rows=4,
                valid_rows=3,
                quarantined_rows=1,
                reasons={"quantity: below minimum 1": 1},
            )
        },
        files=[
            FileOutcome(
                uri=f"s3://{bucket}/raw/order_lines/a.csv",
                dataset="order_lines",
                status="accepted",
                rows=4,
                valid_rows=3,
                quarantined_rows=1,
            ),
            FileOutcome(
                uri=f"s3://{bucket}/raw/order_lines/b.csv",
                dataset="order_lines",
                status="rejected",
                reason="file starts with a UTF-8 byte-order mark (BOM)",
            ),
        ],
    )
    deps.clients.s3.put_object(Bucket=bucket, Key="validation_output/b-show-1.json", Body=result.model_dump_json())

    res = CliRunner().invoke(app, ["batches", "show", "b-show-1"])
    assert res.exit_code == 0, res.output
    for text in ("b-show-1", "passed", "25.0% (limit 50%)", "order_lines", "quantity: below minimum 1",
                 "raw/order_lines/b.csv", "rejected", "file starts with a UTF-8 byte-order mark (BOM)"):  # fmt: skip
        assert text in res.output, text


def test_batches_show_says_clearly_when_there_is_no_report(deps, cli_env) -> None:  # type: ignore[no-untyped-def]
    res = CliRunner().invoke(app, ["batches", "show", "b-never"])
    assert res.exit_code == 1 and "no validation result for batch b-never" in res.output
    res = CliRunner().invoke(app, ["batches", "show", "../etc/passwd"])
    assert res.exit_code != 0 and "not a batch id" in res.output
