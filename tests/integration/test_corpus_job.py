"""The malformed-input corpus through the REAL validation job (Spark local[2], Delta files).

All corpus files are one batch. Every file's outcome, every quarantined row's line and
reasons are compared with the hand-written tests/corpus/expected.yaml; the job's messages
must equal the plain-Python checker's word for word (``cartflow contracts check`` prints
what the job records); quarantined rows are read back with delta-rs; the KPIs computed
from the batch equal a plain-Python computation over the valid rows only.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("pyspark")
deltalake = pytest.importorskip("deltalake")

from cartflow.core.config import Settings  # noqa: E402
from cartflow.core.models import BatchInput, DataType, ValidationResult  # noqa: E402
from spark.jobs.contracts import load_contracts  # noqa: E402
from spark.jobs.rowcheck import check_files  # noqa: E402
from spark.jobs.transform import KpiRows, run_transform  # noqa: E402
from spark.jobs.validation import run_validation  # noqa: E402
from tests import oracle  # noqa: E402
from tests.corpus_expect import CORPUS, Outcome, corpus_files, mismatches, relative  # noqa: E402
from tests.kpi_python import (  # noqa: E402
    category_kpis_by_key,
    order_kpis_by_date,
    python_category_kpis,
    python_lines,
    python_order_kpis,
)
from tests.timings import TIMINGS  # noqa: E402

pytestmark = pytest.mark.integration


class RecordingSink:
    def __init__(self) -> None:
        self.writes: list[KpiRows] = []

    def write(self, rows: KpiRows, batch_id: str) -> None:
        self.writes.append(rows)


def read_delta(path: Path) -> list[dict[str, Any]]:
    dt = deltalake.DeltaTable(str(path))
    table = deltalake.QueryBuilder().register("t", dt).execute("SELECT * FROM t").read_all()
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


@pytest.fixture(scope="module")
def run(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    warehouse = tmp_path_factory.mktemp("corpus-lake")
    settings = Settings(aws_endpoint_url="http://127.0.0.1:9", bucket="cartflow-test", max_quarantined_share=1.0)
    paths: dict[str, list[str]] = {t.paths_field: [] for t in DataType}
    for dataset, path in corpus_files():
        paths[DataType(dataset).paths_field].append(path.as_uri())
    batch = BatchInput(batch_id="corpus-1", group_key="g", bucket="cartflow-test", processing_date="2025-07-08", **paths)
    started = time.perf_counter()
    result = run_validation(spark, settings, batch, warehouse.as_uri())
    validate_s = time.perf_counter() - started
    TIMINGS["corpus validate"].append(validate_s)
    sink = RecordingSink()
    started = time.perf_counter()
    run_transform(spark, settings, batch, warehouse.as_uri(), sink=sink)
    TIMINGS["corpus transform"].append(time.perf_counter() - started)
    print(f"\ncorpus: {len(corpus_files())} files validated by Spark in {validate_s:.1f}s")
    return {"result": result, "warehouse": warehouse, "sink": sink}


def quarantine_rows(warehouse: Path) -> list[dict[str, Any]]:
    rows = []
    for dataset in DataType:
        table = warehouse / "quarantine" / dataset.value
        if (table / "_delta_log").is_dir():
            rows += read_delta(table)
    return rows


def job_outcomes(result: ValidationResult, warehouse: Path) -> dict[str, Outcome]:
    outcomes = {
        relative(f.uri): Outcome(f.status if f.status == "rejected" else "accepted", f.reason, f.valid_rows) for f in result.files
    }
    for row in quarantine_rows(warehouse):
        outcome = outcomes[relative(row["source_file"])]
        outcome.outcome = "quarantined"
        outcome.quarantined[row["line_number"]] = list(row["reasons"])
    return outcomes


def test_every_corpus_file_gets_its_expected_outcome_through_spark(run: dict[str, Any]) -> None:
    assert mismatches(job_outcomes(run["result"], run["warehouse"])) == []


def test_the_job_words_every_reason_like_the_local_checker(run: dict[str, Any]) -> None:
    checker = {relative(r.path): r for r in check_files(corpus_files(), load_contracts())}
    job = job_outcomes(run["result"], run["warehouse"])
    for name, report in checker.items():
        assert (job[name].reason or "").replace("file://", "").endswith((report.reason or "").split("tests/corpus/", 1)[-1]), name
        assert job[name].quarantined == {q.line: [v.message for v in q.violations] for q in report.quarantined}, name


def test_quarantined_rows_carry_structured_errors_file_and_line(run: dict[str, Any]) -> None:
    rows = quarantine_rows(run["warehouse"])
    assert rows
    for row in rows:
        assert row["source_file"].endswith((".csv", ".csv.gz")) and row["line_number"] >= 2 and row["record_number"] >= 1
        assert len(row["errors"]) == len(row["reasons"]) >= 1
        for error, message in zip(row["errors"], row["reasons"], strict=True):
            assert error["rule"] in message or error["rule"] in {
                "required",
                "type",
                "min",
                "max",
                "allowed",
                "pattern",
                "max_length",
                "decimals",
                "unique",
                "reference",
                "malformed",
            }
            if error["column"] is not None and error["rule"] != "unique":
                assert message.startswith(f"{error['column']}:")


def test_result_reports_counts_per_dataset_rule_and_rejected_files(run: dict[str, Any]) -> None:
    result: ValidationResult = run["result"]
    assert result.status == "passed" and result.processing_dates == ["2025-07-08"]
    rejected = [f for f in result.files if f.status == "rejected"]
    assert len(result.rejected_files) == len(rejected) >= 10
    for dataset, table in result.tables.items():
        files = [f for f in result.files if f.dataset == dataset]
        assert table.files + table.rejected_files == len(files)
        assert table.valid_rows == sum(f.valid_rows for f in files)
        assert table.input_rows == table.valid_rows + table.quarantined_rows
        assert table.contract_version == 1
        # A row breaking n rules counts once per rule: the histogram covers every quarantined row.
        assert sum(table.reasons.values()) >= table.quarantined_rows


def test_valid_rows_of_partly_bad_files_reach_the_kpis(run: dict[str, Any]) -> None:
    reports = check_files(corpus_files(), load_contracts())
    valid: dict[str, list[dict[str, Any]]] = {t.value: [] for t in DataType}
    partly_bad_rows = 0
    for report in reports:
        if report.reason is None:
            rows = [r.values for r in report.rows if not r.violations]
            valid[report.dataset] += rows
            partly_bad_rows += len(rows) if report.quarantined else 0
    assert partly_bad_rows > 0
    lines = python_lines(valid["orders"], valid["order_items"], valid["products"], valid["order_lines"])
    [kpis] = run["sink"].writes
    assert order_kpis_by_date(kpis) == python_order_kpis(lines)
    assert category_kpis_by_key(kpis) == python_category_kpis(lines)


# Files as people export them: Excel's BOM, gzip (.csv.gz), BigQuery's " UTC", names with spaces
# and non-ASCII letters. The independent DuckDB oracle reads them with DuckDB's own CSV reader
# (BOM and gzip handled by DuckDB) and must find the same typed values and the same bad rows.
EXPORT_CASES = {
    "orders": [
        "utf8_bom.csv",
        "excel_csv_utf8_bom_crlf.csv",
        "bigquery_export_utc_timestamps.csv",
        "2025 08 01 export (1).csv",
        "ünïcode.csv",
        "orders.csv.gz",
        "concatenated_members.csv.gz",
    ],
    "order_lines": ["excel_export.csv.gz"],
}


def _plain(value: Any) -> Any:
    """delta-rs timestamps may carry tzinfo (UTC instants); the oracle's are naive UTC."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def test_exported_files_have_the_values_the_oracle_reads(run: dict[str, Any]) -> None:
    expected = oracle.load_valid({ds: [CORPUS / ds / name for name in names] for ds, names in EXPORT_CASES.items()})
    for dataset, names in EXPORT_CASES.items():
        wanted_files = {f"{dataset}/{name}" for name in names}
        columns = [c.name for c in expected.contracts[dataset].columns]
        job_rows = [r for r in read_delta(run["warehouse"] / "validated" / dataset) if relative(r["source_file"]) in wanted_files]
        got = sorted((tuple(_plain(r[c]) for c in columns) for r in job_rows), key=repr)
        assert got == sorted(expected.valid(dataset).fetchall(), key=repr), dataset
        assert {relative(r["source_file"]) for r in job_rows} == {f for f in wanted_files if expected_outcome(f) != "rejected"}, (
            dataset
        )
        job_bad = {
            (relative(r["source_file"]), tuple(r[k] for k in expected.contracts[dataset].key))
            for r in quarantine_rows(run["warehouse"])
            if relative(r["source_file"]) in wanted_files
        }
        oracle_bad = {(relative(r.file), r.key) for r in expected.rejected if r.dataset == dataset}
        assert job_bad == oracle_bad, dataset
    # The values the hand-written cases are about: UTC instants from " UTC", offsets and Z.
    created = {r[0]: r[4] for r in expected.valid("orders").fetchall()}
    assert created[1510] == datetime(2025, 8, 1, 10, 0) and created[1512] == datetime(2025, 8, 2, 3, 0)
    assert created[1515] == datetime(2025, 7, 31, 23, 0) and created[1540] == datetime(2025, 8, 1, 10, 0)


def expected_outcome(name: str) -> str:
    from tests.corpus_expect import expected

    return str(expected()[name]["outcome"])
