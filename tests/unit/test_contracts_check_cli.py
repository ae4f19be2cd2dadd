"""`cartflow contracts check`: the job's file and row verdicts in plain Python, from the shell."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cartflow.cli import app
from tests.corpus_expect import CORPUS


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def test_a_clean_file_exits_zero() -> None:
    res = CliRunner().invoke(app, ["contracts", "check", str(CORPUS / "orders" / "base_orders.csv")])
    assert res.exit_code == 0, res.output
    assert "accepted" in res.output


def test_problems_exit_one_with_line_and_reason() -> None:
    files = [CORPUS / "orders" / "several_faults_in_one_row.csv", CORPUS / "order_lines" / "utf16_be_bom.csv"]
    res = CliRunner().invoke(app, ["contracts", "check", *map(str, files)])
    assert res.exit_code == 1
    assert "file is UTF-16 encoded, not UTF-8" in res.output
    assert "user_id: not a valid long: 'abc'" in res.output
    assert "quarantined" in res.output and "rejected" in res.output


def test_an_unknown_dataset_is_a_usage_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    stray = tmp_path / "stray.csv"
    stray.write_text("a\n1\n")
    res = CliRunner().invoke(app, ["contracts", "check", str(stray)])
    assert res.exit_code == 2 and "use --dataset" in res.output
    res = CliRunner().invoke(app, ["contracts", "check", "--dataset", "orders", str(stray)])
    assert res.exit_code == 1 and "header is missing column(s)" in res.output
