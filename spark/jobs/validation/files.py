"""File-level decisions without Spark: inspect each raw file, reject bad files and copies, plan the archive."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from cartflow.core.models import (
    DELETED_REASON,
    FILE_REGISTRY_PREFIX,
    RAW_PREFIX,
    REJECTED_PREFIX,
    ArchiveItem,
    BatchInput,
    DataType,
    FileOutcome,
)
from spark.jobs.contracts import Contract
from spark.jobs.delta_io import read_delta_if_exists
from spark.jobs.filecheck import FileInspection, inspect_file
from spark.jobs.rowcheck import duplicate_file_reason
from spark.jobs.storage import Storage, as_s3_uri, join_uri, parse_s3
from spark.jobs.validation.columns import BATCH_ID, SOURCE_FILE

# Its staged copy is missing: the uploaded version was gone when the batch staged it.
MISSING_FILE = DELETED_REASON


@dataclass(frozen=True)
class SourceFile:
    uri: str  # the raw URI: the file's name in every outcome, registry row and report
    dataset: str
    inspection: FileInspection
    read_uri: str = ""  # where its bytes are read (the batch's staged copy); "" = uri

    @property
    def location(self) -> str:
        return self.read_uri or self.uri


@dataclass
class Structure:
    """The batch's files after the file-level checks: readable ones by dataset, every outcome."""

    accepted: dict[str, list[SourceFile]] = field(default_factory=dict)
    outcomes: dict[str, FileOutcome] = field(default_factory=dict)  # uri -> outcome, in batch order
    missing: set[str] = field(default_factory=set)  # gone from S3 since upload: nothing to archive


def inspect_batch(storage: Storage, contracts: dict[str, Contract], batch: BatchInput) -> list[SourceFile]:
    """One streaming pass per raw file (hash, encoding, header, structure); no Spark."""
    sources = []
    for data_type in DataType:
        contract = contracts[data_type.value]
        for uri in batch.paths(data_type):
            read_uri = batch.read_uri(uri)
            try:
                inspection = inspect_file(partial(storage.iter_bytes, read_uri), contract, name=uri)
            except FileNotFoundError:
                inspection = FileInspection(size=0, sha256="", reason=MISSING_FILE)
            sources.append(SourceFile(uri=uri, dataset=contract.dataset, inspection=inspection, read_uri=read_uri))
    return sources


def decide_files(sources: list[SourceFile], earlier: dict[str, tuple[str, str]]) -> Structure:
    """Reject files that failed their checks or repeat an accepted file byte for byte.

    ``earlier``: sha256 -> (uri, batch_id) of files accepted by other batches. Within the
    batch the first URI in sort order is kept and its copies are rejected.
    """
    structure = Structure()
    first_seen: dict[str, str] = {}
    for source in sorted(sources, key=lambda s: s.uri):
        reason = source.inspection.reason
        if reason is None and source.inspection.sha256 in earlier:
            original, batch_id = earlier[source.inspection.sha256]
            reason = duplicate_file_reason(original, batch_id)
        if reason is None:
            original = first_seen.setdefault(source.inspection.sha256, source.uri)
            if original != source.uri:
                reason = duplicate_file_reason(original)
        if reason is None:
            structure.accepted.setdefault(source.dataset, []).append(source)
        if reason == MISSING_FILE:
            structure.missing.add(source.uri)
        structure.outcomes[source.uri] = FileOutcome(
            uri=as_s3_uri(source.uri),
            dataset=source.dataset,
            status="accepted" if reason is None else "rejected",
            reason=reason,
            sha256=source.inspection.sha256 or None,
            size=source.inspection.size,
        )
    # Keep the batch's own order (datasets, then keys) for people reading the result.
    order = {s.uri: i for i, s in enumerate(sources)}
    structure.outcomes = dict(sorted(structure.outcomes.items(), key=lambda kv: order[kv[0]]))
    return structure


@dataclass(frozen=True)
class RegistryView:
    """What the file registry says about a batch before it is validated."""

    earlier: dict[str, tuple[str, str]]  # sha256 -> (uri, batch) accepted by other batches
    owners_written: bool  # some registry row belongs to this batch or a batch it replaces


def read_registry(
    spark: SparkSession, warehouse: str, sources: list[SourceFile], batch_id: str, replaces: Sequence[str] = ()
) -> RegistryView:
    """Earlier copies of this batch's files and whether its own rows were written, in ONE action.

    The registry is committed before validated/ and quarantine/ (output.write_tables), so
    no registry row of the batch means neither table holds its rows: a first run can append
    instead of replacing, which spares Delta the state reconstruction of those tables.
    """
    hashes = sorted({s.inspection.sha256 for s in sources if s.inspection.reason is None})
    registry = read_delta_if_exists(spark, join_uri(warehouse, FILE_REGISTRY_PREFIX))
    if registry is None:
        return RegistryView({}, owners_written=False)
    owners = [batch_id, *replaces]
    ours = F.col(BATCH_ID).isin(owners)
    copies = (F.col("status") == "accepted") & ~ours & F.col("sha256").isin(hashes) if hashes else F.lit(False)
    rows = (
        registry.where(copies | ours)
        .select("sha256", SOURCE_FILE, BATCH_ID, ours.alias("_ours"))
        .collect()  # a handful of metadata rows, never data
    )
    theirs = sorted((r for r in rows if not r["_ours"]), key=lambda r: (r[BATCH_ID], r[SOURCE_FILE]))
    return RegistryView(
        earlier={r["sha256"]: (r[SOURCE_FILE], r[BATCH_ID]) for r in theirs},
        owners_written=any(r["_ours"] for r in rows),
    )


def archive_exceptions(structure: Structure) -> tuple[list[str], list[str]]:
    """(raw keys rejected as a whole, raw keys gone before staging): what the state machine's
    archive reads to send a file to rejected/ or to leave it out."""

    def key(uri: str) -> str | None:
        loc = parse_s3(uri)
        return loc.key if loc else None

    rejected = [
        k for uri, o in structure.outcomes.items() if o.status == "rejected" and uri not in structure.missing if (k := key(uri))
    ]
    missing = [k for uri in sorted(structure.missing) if (k := key(uri))]
    return rejected, missing


def archive_plan(batch: BatchInput, structure: Structure) -> list[ArchiveItem]:
    """Accepted files go to processed/<batch>/, rejected ones to rejected/<batch>/; vanished ones nowhere."""
    plan = []
    for item in batch.archive:
        uri = f"s3://{batch.bucket}/{item.source_key}"
        if uri in structure.missing:
            continue
        outcome = structure.outcomes.get(uri)
        if outcome is not None and outcome.status == "rejected":
            item = item.model_copy(  # noqa: PLW2901  the plan keeps the redirected copy, not the input
                update={"archive_key": f"{REJECTED_PREFIX}{batch.batch_id}/{item.source_key[len(RAW_PREFIX) :]}"}
            )
        plan.append(item)
    return plan
