"""File decisions of the validation job without Spark: duplicates, missing files, archive plan."""

from __future__ import annotations

from cartflow.core.models import BatchInput, RawFile
from spark.jobs.filecheck import FileInspection
from spark.jobs.validation import MISSING_FILE, SourceFile, archive_plan, decide_files


def source(key: str, sha: str, reason: str | None = None) -> SourceFile:
    return SourceFile(f"s3://b/{key}", key.split("/")[1], FileInspection(size=10, sha256=sha, reason=reason))


def batch(*keys: str) -> BatchInput:
    files = [RawFile.parse("b", k) for k in keys]
    return BatchInput.from_files(batch_id="b1", group_key="g", bucket="b", processing_date="2025-07-08", files=files)


def test_a_byte_identical_copy_is_rejected_and_the_first_path_kept() -> None:
    structure = decide_files([source("raw/orders/b.csv", "h1"), source("raw/orders/a.csv", "h1")], {})
    assert structure.outcomes["s3://b/raw/orders/a.csv"].status == "accepted"
    b = structure.outcomes["s3://b/raw/orders/b.csv"]
    assert (b.status, b.reason) == ("rejected", "duplicate of s3://b/raw/orders/a.csv in this batch (same sha256)")
    assert [s.uri for s in structure.accepted["orders"]] == ["s3://b/raw/orders/a.csv"]


def test_a_copy_of_a_file_an_earlier_batch_accepted_is_rejected() -> None:
    structure = decide_files([source("raw/orders/a.csv", "h1")], {"h1": ("s3://b/raw/orders/old.csv", "b0")})
    assert structure.outcomes["s3://b/raw/orders/a.csv"].reason == (
        "duplicate of s3://b/raw/orders/old.csv accepted in batch b0 (same sha256)"
    )
    assert structure.accepted == {}


def test_a_rejected_file_does_not_make_its_copy_a_duplicate() -> None:
    structure = decide_files([source("raw/orders/a.csv", "h1", "file is empty (0 bytes)"), source("raw/orders/b.csv", "h1")], {})
    assert structure.outcomes["s3://b/raw/orders/b.csv"].status == "accepted"


def test_archive_plan_sends_rejected_files_to_rejected_and_skips_vanished_ones() -> None:
    sources = [
        source("raw/orders/ok.csv", "h1"),
        source("raw/orders/bad.csv", "h2", "file is empty (0 bytes)"),
        source("raw/orders/gone.csv", "", MISSING_FILE),
    ]
    structure = decide_files(sources, {})
    plan = {
        a.source_key: a.archive_key
        for a in archive_plan(batch("raw/orders/ok.csv", "raw/orders/bad.csv", "raw/orders/gone.csv"), structure)
    }
    assert plan == {"raw/orders/ok.csv": "processed/b1/orders/ok.csv", "raw/orders/bad.csv": "rejected/b1/orders/bad.csv"}
