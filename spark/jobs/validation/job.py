"""The validation job end to end: file checks, row checks, one count, then the writes or a failure."""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession

from cartflow.core.config import Settings
from cartflow.core.models import VALIDATION_OUTPUT_PREFIX, BatchInput, BatchShape, DataType, ValidationResult
from spark.jobs.contracts import Contract, dependency_order, load_contracts
from spark.jobs.delta_io import default_warehouse, require_utc
from spark.jobs.session import SHUFFLE_CSV_BYTES, fit_shuffle_partitions
from spark.jobs.storage import Storage, as_s3_uri, join_uri
from spark.jobs.validation.counts import count_rows, fill_result
from spark.jobs.validation.files import archive_exceptions, archive_plan, decide_files, inspect_batch, read_registry
from spark.jobs.validation.output import write_tables
from spark.jobs.validation.reading import read_raw
from spark.jobs.validation.references import referenceable_keys
from spark.jobs.validation.rows import check_rows

log = logging.getLogger(__name__)


def run_validation(
    spark: SparkSession,
    settings: Settings,
    batch: BatchInput,
    warehouse: str | None = None,
    *,
    storage: Storage | None = None,
    contracts: dict[str, Contract] | None = None,
) -> ValidationResult:
    warehouse = warehouse or default_warehouse(batch)
    storage = storage or Storage(settings)
    contracts = contracts or load_contracts(settings.contracts_dir)
    result_uri = join_uri(warehouse, VALIDATION_OUTPUT_PREFIX, f"{batch.batch_id}.json")
    require_utc(spark)

    sources = inspect_batch(storage, contracts, batch)
    registry = read_registry(spark, warehouse, sources, batch.batch_id, batch.replaces)
    structure = decide_files(sources, registry.earlier)
    result = ValidationResult(
        batch_id=batch.batch_id,
        processing_date=batch.processing_date,
        status="passed",
        shape=batch_shape(batch),
        max_quarantined_share=settings.max_quarantined_share,
        result_uri=as_s3_uri(result_uri),
    )
    fit_shuffle_partitions(
        spark,
        settings,
        sum(s.inspection.size for files in structure.accepted.values() for s in files),
        SHUFFLE_CSV_BYTES,
    )
    checked: dict[str, DataFrame] = {}
    try:
        for dataset in dependency_order(contracts, structure.accepted):
            contract = contracts[dataset]
            referenced = {
                ref.column: referenceable_keys(spark, warehouse, contracts[ref.dataset], checked.get(ref.dataset), batch)
                for ref in contract.references
            }
            raw = read_raw(spark, contract, structure.accepted[dataset])
            checked[dataset] = check_rows(raw, contract, referenced).cache()

        counts = count_rows(checked)  # the one action before the writes: materialises the caches
        fill_result(result, structure, counts, contracts)
        if result.quarantined_share > settings.max_quarantined_share:
            result.status = "failed"
            result.errors = [_over_threshold(result, settings)]
        else:
            first_write = not registry.owners_written and not batch.replaces
            write_tables(spark, checked, contracts, structure, counts, batch, warehouse, first_write=first_write)
            result.processing_dates = [batch.processing_date] if checked else []
            result.archive = archive_plan(batch, structure)
            result.rejected_sources, result.missing_sources = archive_exceptions(structure)
    finally:
        for frame in checked.values():
            frame.unpersist()

    storage.write_text(result_uri, result.model_dump_json(indent=2))
    log.info("validation of %s: %s %s", batch.batch_id, result.status, result.errors or "")
    return result


def batch_shape(batch: BatchInput) -> BatchShape:
    has_tables = any(batch.paths(t) for t in (DataType.ORDERS, DataType.ORDER_ITEMS, DataType.PRODUCTS))
    has_flat = bool(batch.paths(DataType.ORDER_LINES))
    if has_tables and has_flat:
        return "mixed"
    if has_tables:
        return "tables"
    return "order_lines" if has_flat else "empty"


def _over_threshold(result: ValidationResult, settings: Settings) -> str:
    rows = sum(t.input_rows for t in result.tables.values())
    bad = sum(t.quarantined_rows for t in result.tables.values())
    return (
        f"quarantined {bad} of {rows} rows ({result.quarantined_share:.0%}), above the limit of "
        f"{settings.max_quarantined_share:.0%} (CARTFLOW_MAX_QUARANTINED_SHARE); nothing was written"
    )
