"""Object I/O outside Spark: result documents, and raw files streamed for the file checks.

Jobs stream a raw file and write their JSON result without a Spark action: S3 URIs
(``s3://`` or ``s3a://``) go through boto3 clients built from Settings (so the emulator
endpoint comes from the one place that knows it); ``file://`` URIs and plain paths go to
the local disk (tests, local runs).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from botocore.exceptions import ClientError

from cartflow.core.aws import AwsClients
from cartflow.core.config import Settings
from cartflow.core.errors import error_code

_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str


def parse_s3(uri: str) -> S3Location | None:
    """``s3://b/k`` or ``s3a://b/k`` -> S3Location; None for anything else."""
    parts = urlsplit(uri)
    if parts.scheme.lower() not in ("s3", "s3a"):
        return None
    if not parts.netloc or not parts.path.strip("/"):
        raise ValueError(f"S3 URI needs a bucket and a key: {uri!r}")
    return S3Location(bucket=parts.netloc, key=parts.path.lstrip("/"))


def local_path(uri: str) -> Path:
    """``file:///x`` / ``file:/x`` / ``/x`` -> Path; ValueError for other schemes."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme == "":
        return Path(uri)
    raise ValueError(f"not a local or S3 URI: {uri!r}")


def join_uri(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def as_s3_uri(uri: str) -> str:
    """Consumers (Lambdas, Step Functions) speak ``s3://``; S3A is a Spark-only spelling."""
    return "s3://" + uri[len("s3a://") :] if uri.lower().startswith("s3a://") else uri


class Storage:
    """Reads/writes whole small objects. One instance per job run (boto3 clients are reused)."""

    def __init__(self, settings: Settings, clients: AwsClients | None = None) -> None:
        self._settings = settings
        self._clients = clients

    @property
    def _s3(self) -> Any:
        if self._clients is None:
            self._clients = AwsClients(self._settings)
        return self._clients.s3

    def write_text(self, uri: str, text: str, content_type: str = "application/json") -> None:
        loc = parse_s3(uri)
        if loc is not None:
            self._s3.put_object(Bucket=loc.bucket, Key=loc.key, Body=text.encode("utf-8"), ContentType=content_type)
            return
        path = local_path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)  # readers never see a half-written document

    def read_text(self, uri: str) -> str:
        data = self.read_bytes(uri)
        if data is None:
            raise FileNotFoundError(uri)
        return data.decode("utf-8")

    def iter_bytes(self, uri: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The object's bytes in chunks, streamed; FileNotFoundError if it does not exist."""
        loc = parse_s3(uri)
        if loc is not None:
            try:
                body = self._s3.get_object(Bucket=loc.bucket, Key=loc.key)["Body"]
            except ClientError as exc:
                if error_code(exc) in _MISSING_CODES:
                    raise FileNotFoundError(uri) from exc
                raise
            yield from body.iter_chunks(chunk_size)
            return
        path = local_path(uri)
        if not path.is_file():
            raise FileNotFoundError(uri)
        with path.open("rb") as fh:
            while chunk := fh.read(chunk_size):
                yield chunk

    def read_bytes(self, uri: str, max_bytes: int | None = None) -> bytes | None:
        """The object's bytes (the first ``max_bytes`` if given); None if it does not exist."""
        loc = parse_s3(uri)
        if loc is not None:
            extra = {"Range": f"bytes=0-{max_bytes - 1}"} if max_bytes else {}
            try:
                return self._s3.get_object(Bucket=loc.bucket, Key=loc.key, **extra)["Body"].read()
            except ClientError as exc:
                code = error_code(exc)
                if code in _MISSING_CODES:
                    return None
                if code == "InvalidRange":  # ranged GET of a zero-byte object
                    return b""
                raise
        path = local_path(uri)
        if not path.is_file():
            return None
        with path.open("rb") as fh:
            return fh.read(max_bytes) if max_bytes else fh.read()
