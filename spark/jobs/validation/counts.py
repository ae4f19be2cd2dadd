"""Counting checked rows per file, split and rule in one Spark job, and filling the result with them."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cartflow.core.models import TableResult, ValidationResult
from spark.jobs.contracts import Contract
from spark.jobs.storage import as_s3_uri
from spark.jobs.validation.columns import _PID, ERRORS, SOURCE_FILE
from spark.jobs.validation.files import Structure

_VALID_TAG = "\u0000valid"


@dataclass
class Counts:
    """Rows per (dataset, file, split, tag): tag is _VALID_TAG or a rule label (a row counts once per label)."""

    rows: dict[tuple[str, str, int], int] = field(default_factory=dict)  # (dataset, file, split) -> rows
    valid: dict[str, int] = field(default_factory=dict)  # file -> valid rows
    labels: dict[str, dict[str, int]] = field(default_factory=dict)  # dataset -> label -> rows

    def file_rows(self, uri: str) -> int:
        return sum(n for (_, f, _), n in self.rows.items() if f == uri)

    def split_offsets(self) -> dict[tuple[str, int], int]:
        """Records in the earlier splits of the same file (splits of one file are in file order)."""
        offsets: dict[tuple[str, int], int] = {}
        running: dict[str, int] = {}
        for (_, uri, split), n in sorted(self.rows.items(), key=lambda kv: (kv[0][1], kv[0][2])):
            offsets[(uri, split)] = running.get(uri, 0)
            running[uri] = running.get(uri, 0) + n
        return offsets


def count_rows(checked: dict[str, DataFrame]) -> Counts:
    """Counts for the result, the threshold and line numbers, in ONE Spark job."""
    counts = Counts()
    if not checked:
        return counts
    parts = []
    for dataset, frame in checked.items():
        # One "row" tag per row, plus a valid tag or one tag per distinct label of its errors.
        tags = F.when(F.size(ERRORS) == 0, F.array(F.lit("\u0000row"), F.lit(_VALID_TAG))).otherwise(
            F.concat(F.array(F.lit("\u0000row")), F.array_distinct(F.transform(F.col(ERRORS), lambda e: e["label"])))
        )
        parts.append(frame.select(F.lit(dataset).alias("dataset"), F.col(SOURCE_FILE), F.col(_PID), F.explode(tags).alias("tag")))
    union = parts[0]
    for part in parts[1:]:
        union = union.unionByName(part)
    for row in union.groupBy("dataset", SOURCE_FILE, _PID, "tag").count().collect():
        dataset, uri, split, tag, n = row["dataset"], row[SOURCE_FILE], row[_PID], row["tag"], row["count"]
        if tag == "\u0000row":
            counts.rows[(dataset, uri, split)] = n
        elif tag == _VALID_TAG:
            counts.valid[uri] = counts.valid.get(uri, 0) + n
        else:
            labels = counts.labels.setdefault(dataset, {})
            labels[tag] = labels.get(tag, 0) + n
    return counts


def fill_result(result: ValidationResult, structure: Structure, counts: Counts, contracts: dict[str, Contract]) -> None:
    tables: dict[str, TableResult] = {}
    for outcome in structure.outcomes.values():
        table = tables.setdefault(outcome.dataset, TableResult(contract_version=contracts[outcome.dataset].version))
        if outcome.status == "rejected":
            table.rejected_files += 1
            continue
        uri = next(s.uri for s in structure.accepted[outcome.dataset] if as_s3_uri(s.uri) == outcome.uri)
        outcome.rows = counts.file_rows(uri)
        outcome.valid_rows = counts.valid.get(uri, 0)
        outcome.quarantined_rows = outcome.rows - outcome.valid_rows
        table.files += 1
        table.input_rows += outcome.rows
        table.valid_rows += outcome.valid_rows
        table.quarantined_rows += outcome.quarantined_rows
    for dataset, table in tables.items():
        table.reasons = dict(sorted(counts.labels.get(dataset, {}).items()))
    result.tables = dict(sorted(tables.items()))
    result.files = list(structure.outcomes.values())
    total = sum(t.input_rows for t in tables.values())
    result.quarantined_share = round(sum(t.quarantined_rows for t in tables.values()) / total, 4) if total else 0.0
