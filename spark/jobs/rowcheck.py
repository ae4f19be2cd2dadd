"""Check local CSV files against their contracts in plain Python: ``cartflow contracts check``.

Fast feedback for data producers: the same file checks (filecheck.py) and the same rule
texts (rules.py) as the Spark job, over a handful of files, in a second and without a JVM.
The files given together are treated as one batch: duplicate keys and references are
resolved across them (a reference to a dataset not among them can be satisfied by
``known_keys``, e.g. keys exported from the validated tables).

Not a second pipeline: it keeps every row in memory and is meant for files of a few MB.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from spark.jobs import rules
from spark.jobs.contracts import Contract, dependency_order
from spark.jobs.filecheck import CHUNK_BYTES, FileInspection, inspect_file, is_gzip_name, read_text
from spark.jobs.rules import Violation


@dataclass
class RowReport:
    line: int  # physical line where the record starts (header = 1)
    values: dict[str, str | None]
    violations: list[Violation] = field(default_factory=list)
    typed: dict[str, object] = field(default_factory=dict)
    malformed: bool = False


@dataclass
class FileReport:
    path: str
    dataset: str
    inspection: FileInspection
    reason: str | None = None  # file-level rejection
    rows: list[RowReport] = field(default_factory=list)

    @property
    def quarantined(self) -> list[RowReport]:
        return [r for r in self.rows if r.violations]

    @property
    def valid_rows(self) -> int:
        return sum(1 for r in self.rows if not r.violations)

    @property
    def outcome(self) -> str:
        if self.reason is not None:
            return "rejected"
        return "quarantined" if self.quarantined else "accepted"


def read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            yield chunk


def check_files(
    files: list[tuple[str, Path]],
    contracts: Mapping[str, Contract],
    known_keys: Mapping[str, set[object]] | None = None,
) -> list[FileReport]:
    """``files``: (dataset, path) pairs checked as one batch; reports in the given order."""
    reports = [
        FileReport(str(path), dataset, inspect_file(partial(read_chunks, path), contracts[dataset], name=path.name))
        for dataset, path in files
    ]
    for report in reports:
        report.reason = report.inspection.reason
    reject_duplicate_files(reports)
    for report in reports:
        if report.reason is None:
            report.rows = _check_rows(Path(report.path), contracts[report.dataset])

    by_dataset: dict[str, list[FileReport]] = {}
    for report in reports:
        if report.reason is None:
            by_dataset.setdefault(report.dataset, []).append(report)
    valid_keys: dict[str, set[object]] = {}
    for dataset in dependency_order(dict(contracts), by_dataset):
        contract = contracts[dataset]
        rows = [row for report in by_dataset[dataset] for row in report.rows]
        _check_duplicates(rows, contract)
        for ref in contract.references:
            allowed = valid_keys.get(ref.dataset, set()) | set((known_keys or {}).get(ref.dataset, set()))
            for row in rows:
                value = row.typed.get(ref.column)
                if not row.malformed and value is not None and value not in allowed:
                    label = rules.reference_label(ref.column, ref.dataset)
                    text = row.values[ref.column] or ""
                    row.violations.append(Violation.of(rules.REFERENCE, ref.column, label, rules.trim(text)))
        (key,) = contract.key if len(contract.key) == 1 else (None,)
        if key is not None:
            valid_keys[dataset] = {row.typed[key] for row in rows if not row.violations}
    return reports


def reject_duplicate_files(reports: list[FileReport]) -> None:
    """A byte-identical copy of a file that is not itself rejected is rejected; the first path wins."""
    first_seen: dict[str, FileReport] = {}
    for report in sorted(reports, key=lambda r: r.path):
        if report.reason is not None:
            continue
        original = first_seen.setdefault(report.inspection.sha256, report)
        if original is not report:
            report.reason = duplicate_file_reason(original.path)


def duplicate_file_reason(original: str, batch_id: str | None = None) -> str:
    where = "in this batch" if batch_id is None else f"accepted in batch {batch_id}"
    return f"duplicate of {original} {where} (same sha256)"


def _check_rows(path: Path, contract: Contract) -> list[RowReport]:
    text = read_text(path.read_bytes(), gzipped=is_gzip_name(path.name))
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [name.strip() for name in next(reader)]
    position = {name: i for i, name in enumerate(header)}
    rows: list[RowReport] = []
    start = reader.line_num + 1
    for record in reader:
        end = reader.line_num
        if record:
            rows.append(_check_record(record, start, header, position, contract))
        start = end + 1
    return rows


def _check_record(record: list[str], line: int, header: list[str], position: dict[str, int], contract: Contract) -> RowReport:
    if len(record) != len(header):
        row = RowReport(line, {}, malformed=True)
        message = rules.malformed_message(len(header))
        row.violations.append(Violation(rules.MALFORMED, None, None, message, rules.MALFORMED_LABEL))
        return row
    values: dict[str, str | None] = {c.name: record[position[c.name]] for c in contract.columns}
    row = RowReport(line, values)
    for column in contract.columns:
        row.violations.extend(rules.check_value(column, values[column.name]))
        value = rules.trim(values[column.name])
        row.typed[column.name] = None if value is None else rules.parse(column, value)
    return row


def _check_duplicates(rows: list[RowReport], contract: Contract) -> None:
    def key_of(row: RowReport) -> tuple[object, ...] | None:
        if row.malformed:
            return None
        key = tuple(row.typed.get(k) for k in contract.key)
        return None if any(part is None for part in key) else key

    counts = Counter(k for k in map(key_of, rows) if k is not None)
    for row in rows:
        key = key_of(row)
        if key is not None and counts[key] > 1:
            message = rules.unique_message(contract, counts[key])
            row.violations.append(Violation(rules.UNIQUE, ",".join(contract.key), None, message, rules.unique_label(contract)))
