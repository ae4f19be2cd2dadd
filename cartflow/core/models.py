"""Typed shapes shared by the functions, the state machine input and the Spark jobs."""

from __future__ import annotations

import re
import unicodedata
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from cartflow.core.exceptions import CartflowError

RAW_PREFIX = "raw/"
PROCESSED_PREFIX = "processed/"
REJECTED_PREFIX = "rejected/"  # raw files the validation rejected as a whole, per batch
FILE_REGISTRY_PREFIX = "file_registry/"  # Delta table: one row per validated file (hash, outcome)
VALIDATED_PREFIX = "validated/"
QUARANTINE_PREFIX = "quarantine/"
VALIDATION_OUTPUT_PREFIX = "validation_output/"
KPIS_PREFIX = "kpis/"
# Immutable per-batch copies of exactly the uploaded versions: the jobs read these, never raw/
# (a key can be overwritten or deleted while its batch runs). See docs/delivery.md.
STAGING_PREFIX = "staging/"
DATA_PREFIXES = (
    RAW_PREFIX,
    VALIDATED_PREFIX,
    QUARANTINE_PREFIX,
    VALIDATION_OUTPUT_PREFIX,
    PROCESSED_PREFIX,
    REJECTED_PREFIX,
    FILE_REGISTRY_PREFIX,
    STAGING_PREFIX,
)


class DataType(StrEnum):
    """The raw datasets we accept; the folder under raw/ names the type."""

    ORDERS = "orders"
    ORDER_ITEMS = "order_items"
    PRODUCTS = "products"
    ORDER_LINES = "order_lines"  # the flat "one row per order line" file (seed 002)

    @property
    def paths_field(self) -> str:
        return f"{self.value}_paths"


class BatchStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"


class EventStatus(StrEnum):
    RECEIVED = "received"  # waiting for the debounce window
    BATCHED = "batched"  # part of a batch chunk (its fate is the batch's status)
    REJECTED = "rejected"  # terminal: the key is not something we can process
    SUPERSEDED = "superseded"  # terminal: a later upload of the same key replaced it before batching
    DELETED = "deleted"  # terminal: the key was deleted before its batch read it
    REMOVAL = "removal"  # a user's delete of a raw key (not a file): cancels uploads still waiting


# Why a waiting upload was not processed (events table `reason`, shown by files and audit).
SUPERSEDED_REASON = "superseded by a later upload of the same key (version {version}) before its batch started"
DELETED_REASON = "deleted before its batch read it"


# raw/<data_type>/<name>.csv (or .csv.gz), optionally with sub-folders. Names are what people
# export ("2025 08 01 export (1).csv", "ünïcode.csv"): ASCII letters, digits, ._=- plus spaces,
# parentheses and non-ASCII letters (with their combining marks). Nothing else: no control or
# format characters, no %, +, quotes, backslashes, glob characters or other punctuation, so a
# key means the same to S3, Hadoop paths (which decode %XX and expand globs), Step Functions
# and the archive copies. The key arrives URL-decoded (S3 URL-encodes keys in notifications).
_RAW_KEY_RE = re.compile(r"^raw/(?P<type>[a-z_]+)/(?P<rest>(?:[^/]+/)*(?P<name>[^/]+))$")
_ASCII_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._=-() ")
_MAX_KEY_LEN = 512
RAW_SUFFIXES = (".csv", ".csv.gz")  # .csv.gz: gzip-compressed CSV, read through Spark's codec
_REFUSED_SUFFIXES = {
    ".zip": "zip archives are not read: unzip it and upload the .csv inside (or gzip the .csv as .csv.gz)",
    ".gz": "only gzip-compressed CSV is read: name it <file>.csv.gz",
    ".xlsx": 'Excel workbooks are not read: save the sheet as "CSV UTF-8 (Comma delimited)" and upload the .csv',
    ".xls": 'Excel workbooks are not read: save the sheet as "CSV UTF-8 (Comma delimited)" and upload the .csv',
    ".bz2": "only gzip compression is read: decompress it and upload the .csv (or gzip it as .csv.gz)",
    ".xz": "only gzip compression is read: decompress it and upload the .csv (or gzip it as .csv.gz)",
    ".zst": "only gzip compression is read: decompress it and upload the .csv (or gzip it as .csv.gz)",
}


def _name_char_allowed(char: str) -> bool:
    if char in _ASCII_NAME_CHARS:
        return True
    # Non-ASCII letters (L*) and combining marks (M*: a decomposed "ü" from macOS is u + U+0308).
    return not char.isascii() and unicodedata.category(char)[0] in "LM"


def _segment_problem(segment: str) -> str | None:
    """Why one folder or file name of a raw key is refused, or None."""
    if segment in (".", "..") or ".." in segment:
        return "key must look like raw/<data_type>/<file>.csv without '..' or '.' segments"
    for char in segment:
        if not _name_char_allowed(char):
            shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
            return (
                f"character {shown} is not allowed in a key: use letters, digits, spaces and ._=-() only "
                "(raw/<data_type>/<file>.csv)"
            )
    if segment != segment.strip(" "):
        return "a name in the key starts or ends with a space: remove it"
    return None


def raw_suffix(key: str) -> str | None:
    """The accepted suffix a raw key ends with ('.csv' or '.csv.gz', any case), else None."""
    lower = key.lower()
    return next((s for s in sorted(RAW_SUFFIXES, key=len, reverse=True) if lower.endswith(s)), None)


class InvalidRawKey(CartflowError, ValueError):
    """A key under raw/ we will not process; the message is the rejection reason."""


class RawFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    bucket: str
    key: str
    data_type: DataType
    part: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def data_type_part(self) -> str:
        return f"{self.data_type.value}#{self.part}"

    @classmethod
    def parse(cls, bucket: str, key: str) -> RawFile:
        """Parse and validate a raw object key; raise InvalidRawKey with a specific reason."""
        if len(key) > _MAX_KEY_LEN:
            raise InvalidRawKey(f"key longer than {_MAX_KEY_LEN} characters")
        if not key.startswith(RAW_PREFIX):
            raise InvalidRawKey(f"key is not under {RAW_PREFIX}")
        m = _RAW_KEY_RE.match(key)
        if not m:
            raise InvalidRawKey("key must look like raw/<data_type>/<file>.csv (no empty or absolute path segments)")
        for segment in m["rest"].split("/"):
            problem = _segment_problem(segment)
            if problem is not None:
                raise InvalidRawKey(problem)
        try:
            data_type = DataType(m["type"])
        except ValueError:
            known = ", ".join(t.value for t in DataType)
            raise InvalidRawKey(f"unknown data type {m['type']!r} (known: {known})") from None
        suffix = raw_suffix(m["name"])
        if suffix is None or len(m["name"]) == len(suffix):
            refused = PurePosixPath(m["name"].lower()).suffix
            raise InvalidRawKey(_REFUSED_SUFFIXES.get(refused, "only .csv and .csv.gz files are accepted"))
        part = m["rest"][: -len(suffix)].replace("/", "_")
        return cls(bucket=bucket, key=key, data_type=data_type, part=part)

    @classmethod
    def from_uri(cls, uri: str) -> RawFile:
        if not uri.startswith("s3://"):
            raise InvalidRawKey(f"not an s3:// URI: {uri!r}")
        bucket, _, key = uri[len("s3://") :].partition("/")
        return cls.parse(bucket, key)


def copy_source(bucket: str, key: str, version_id: str | None = None) -> str:
    """CopyObject's CopySource: "<bucket>/<key>" URL-encoded (keys hold spaces, unicode), plus the version."""
    source = quote(f"{bucket}/{key}", safe="/")
    return f"{source}?versionId={quote(version_id, safe='')}" if version_id else source


def staged_key(batch_id: str, raw_key: str) -> str:
    """Where a batch's copy of one upload lives: staging/<batch_id>/<key below raw/>."""
    return f"{STAGING_PREFIX}{batch_id}/{raw_key[len(RAW_PREFIX) :]}"


class ArchiveItem(BaseModel):
    """One upload of the batch: staged before the jobs run, archived and removed from raw/ after.

    StageRawFiles copies ``read_source`` (exactly the uploaded version) to ``staged_key``; on
    success the staged copy goes to ``archive_key`` (processed/, or rejected/ if validation
    rejected the file), then that raw version and the staged copy are deleted. Never another
    version: a later upload of the key stays in raw/ for its own batch.
    """

    source_key: str  # the raw key the user uploaded (the file's name everywhere)
    version_id: str | None = None  # the uploaded version (None: bucket without versioning)
    read_source: str = ""  # CopySource of the bytes to stage
    staged_key: str = ""
    copy_source: str  # CopySource of the staged copy (what the archive copies)
    archive_key: str
    rejected_key: str = ""  # where it goes instead when validation rejects the file as a whole
    delete_raw: bool = True  # False for a backfill, whose source is already an archived copy


BATCH_ID_PATTERN = r"^[A-Za-z0-9_-]{1,80}$"  # also the execution name: Step Functions' charset and length
BATCH_ID_RE = re.compile(BATCH_ID_PATTERN)


class BatchInput(BaseModel):
    """The Step Functions execution input (and what the Spark jobs receive)."""

    batch_id: str = Field(pattern=BATCH_ID_PATTERN)
    group_key: str
    bucket: str
    processing_date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    orders_paths: list[str] = Field(default_factory=list)
    order_items_paths: list[str] = Field(default_factory=list)
    products_paths: list[str] = Field(default_factory=list)
    order_lines_paths: list[str] = Field(default_factory=list)
    staged: bool = False  # the jobs read staging/<batch_id>/..., the copies StageRawFiles made
    replaces: list[str] = Field(default_factory=list)  # batches a backfill re-runs: their rows are replaced
    # Sum of the uploads' sizes: the state machine runs a batch above the spec's
    # distributed_min_input_bytes on the distributed engine.
    input_bytes: int = Field(default=0, ge=0)
    archive: list[ArchiveItem] = Field(default_factory=list)

    def paths(self, data_type: DataType) -> list[str]:
        return list(getattr(self, data_type.paths_field))

    def read_uri(self, uri: str) -> str:
        """Where the jobs read the file ``uri`` (the raw URI the user knows it by)."""
        if not self.staged:
            return uri
        key = RawFile.from_uri(uri).key
        return f"s3://{self.bucket}/{staged_key(self.batch_id, key)}"

    @classmethod
    def from_files(
        cls,
        *,
        batch_id: str,
        group_key: str,
        bucket: str,
        processing_date: str,
        files: list[RawFile],
        versions: dict[str, str] | None = None,
        sources: dict[str, str] | None = None,
        replaces: list[str] | None = None,
        staged: bool = True,
    ) -> BatchInput:
        """``versions``: raw URI -> uploaded version id; ``sources``: raw URI -> the archived
        key a backfill reads instead of raw/ (its raw version is long gone). ``staged=False``: the
        jobs read the raw keys themselves (a job run outside the state machine, which stages)."""
        versions, sources = versions or {}, sources or {}
        by_type: dict[str, list[str]] = {t.paths_field: [] for t in DataType}
        archive = []
        for f in sorted(files, key=lambda f: f.key):
            by_type[f.data_type.paths_field].append(f.uri)
            version = versions.get(f.uri) or None
            copy_key = staged_key(batch_id, f.key)
            archive.append(
                ArchiveItem(
                    source_key=f.key,
                    version_id=None if f.uri in sources else version,
                    read_source=copy_source(f.bucket, sources[f.uri])
                    if f.uri in sources
                    else copy_source(f.bucket, f.key, version),
                    staged_key=copy_key,
                    copy_source=copy_source(f.bucket, copy_key),
                    archive_key=f"{PROCESSED_PREFIX}{batch_id}/{f.key[len(RAW_PREFIX) :]}",
                    rejected_key=f"{REJECTED_PREFIX}{batch_id}/{f.key[len(RAW_PREFIX) :]}",
                    delete_raw=f.uri not in sources,
                )
            )
        return cls.model_validate(
            {
                "batch_id": batch_id,
                "group_key": group_key,
                "bucket": bucket,
                "processing_date": processing_date,
                "staged": staged,
                "replaces": list(replaces or []),
                "archive": archive,
                **by_type,
            }
        )


class TableResult(BaseModel):
    contract_version: int | None = None
    files: int = 0  # accepted files of this dataset
    rejected_files: int = 0
    input_rows: int = 0
    valid_rows: int = 0
    quarantined_rows: int = 0
    reasons: dict[str, int] = Field(default_factory=dict)  # rule label -> rows breaking it


class FileOutcome(BaseModel):
    """What validation decided for one raw file of the batch."""

    uri: str
    dataset: str
    status: Literal["accepted", "rejected"]
    reason: str | None = None  # why the whole file was rejected
    sha256: str | None = None
    size: int = 0
    rows: int = 0
    valid_rows: int = 0
    quarantined_rows: int = 0


BatchShape = Literal["tables", "order_lines", "mixed", "empty"]  # which raw datasets a batch holds


class ValidationResult(BaseModel):
    """validation_output/<batch_id>.json, and the Validate step's output."""

    batch_id: str
    processing_date: str
    status: Literal["passed", "failed"]
    shape: BatchShape
    tables: dict[str, TableResult] = Field(default_factory=dict)
    files: list[FileOutcome] = Field(default_factory=list)
    processing_dates: list[str] = Field(default_factory=list)  # partitions written
    quarantined_share: float = 0.0
    max_quarantined_share: float = 1.0
    errors: list[str] = Field(default_factory=list)  # why the batch failed
    archive: list[ArchiveItem] = Field(default_factory=list)  # where each raw file goes on success (local runs)
    # What the state machine's archive needs from the job on every target (the aws job input
    # has no archive list): raw keys of files rejected as a whole, and of uploads gone before staging.
    rejected_sources: list[str] = Field(default_factory=list)
    missing_sources: list[str] = Field(default_factory=list)
    result_uri: str | None = None

    @property
    def rejected_files(self) -> dict[str, str]:
        return {f.uri: f.reason or "" for f in self.files if f.status == "rejected"}


class TransformResult(BaseModel):
    batch_id: str
    order_dates: list[str]
    category_kpi_rows: int
    order_kpi_rows: int
