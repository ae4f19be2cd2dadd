"""File-level checks of one raw CSV, in one streaming pass and without Spark.

A file that is not a CSV of its dataset (empty, compressed other than as ``.csv.gz``, UTF-16,
not UTF-8, binary, wrong delimiter, header not the contract's, no data, truncated) is
rejected as a whole with ONE specific reason that says how to fix it; row-level problems are
left to the row rules. What people really export is read: a leading UTF-8 byte-order mark
(Excel's "CSV UTF-8") is skipped, and a ``.csv.gz`` file is checked on its decompressed
content, as Spark reads it through its gzip codec (chosen by the extension). The same pass yields what
the Spark read needs: the header, the content hash (duplicate files), whether a quoted
field spans lines (multiLine read), and where physical lines stop matching record numbers
(blank lines, multi-line records) so quarantined rows can cite their line.

Checks run in a fixed priority and the first that fails is the reason, so the reason for a
given file never depends on chunk boundaries.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import hashlib
import io
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from spark.jobs.contracts import Contract

# Python's csv module refuses fields over 128 KiB by default; a long field is a row-level
# matter (max_length), not a reason to fail the scan. Process-wide, set once.
MAX_FIELD_CHARS = 64 * 1024 * 1024
csv.field_size_limit(MAX_FIELD_CHARS)

MAX_LINE_SHIFTS = 10_000  # beyond this many irregularities, quarantined rows cite records only
CHUNK_BYTES = 1 << 20

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"PK\x03\x04", "zip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_BINARY = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f]")
_OTHER_DELIMITERS = ((";", ";"), ("\t", "\\t"), ("|", "|"))
_GZIP_MAGIC = b"\x1f\x8b"
_HEAD_BYTES = 8  # what the magic-number and byte-order-mark checks look at


def is_gzip_name(name: str) -> bool:
    """A raw file named ``*.gz`` (the key rules allow ``.csv.gz`` only) is read as gzip, like Spark does.

    Case-sensitive like Hadoop's codec lookup: Spark reads ``x.CSV.GZ`` as plain text, so the
    checks do too (and its gzip bytes are rejected with "rename it to .csv.gz").
    """
    return name.endswith(".gz")


def read_text(data: bytes, *, gzipped: bool) -> str:
    """A whole (small) file's text as the job reads it: gunzipped if named .gz, without a UTF-8 BOM."""
    return (gzip.decompress(data) if gzipped else data).decode("utf-8-sig")


@dataclass(frozen=True)
class FileInspection:
    """What one pass over a raw file found; ``reason`` is None when the file may be read."""

    size: int
    sha256: str
    reason: str | None = None
    header: tuple[str, ...] = ()
    records: int = 0  # data records (blank lines excluded)
    multiline: bool = False  # a quoted field spans lines: Spark must read it with multiLine
    # (first record index, start line - (index + 2)) wherever that difference changes;
    # None when there are more than MAX_LINE_SHIFTS changes (line numbers unknown).
    line_shifts: tuple[tuple[int, int], ...] | None = ()

    @property
    def rejected(self) -> bool:
        return self.reason is not None


@dataclass
class _Scan:
    """Mutable state of the pass; turned into a FileInspection at the end."""

    size: int = 0  # bytes of content (after decompression)
    head: bytes = b""
    bom: bool = False  # the content starts with a UTF-8 byte-order mark (skipped)
    binary_at: int | None = None
    binary_byte: int = 0
    utf8_error: str | None = None
    ends_with_newline: bool = False


def inspect_file(open_chunks: Callable[[], Iterable[bytes]], contract: Contract, *, name: str = "") -> FileInspection:
    """The file's inspection (never raises on bad content); ``open_chunks()`` streams its bytes.

    ``name`` (the key, URI or path) decides whether the bytes are gzip (``*.gz``), as it does
    for Spark. Most files have no quote, CR or blank line: for them every structural fact
    follows from byte counts at C speed (_plain_inspection), without the CSV reader. Anything
    else, or any problem, takes the full pass over a re-opened stream, so reasons never depend
    on the path.
    """
    gzipped = is_gzip_name(name)
    return _plain_inspection(open_chunks(), contract, gzipped=gzipped) or inspect_stream(open_chunks(), contract, gzipped=gzipped)


def inspect_stream(chunks: Iterable[bytes], contract: Contract, *, gzipped: bool = False) -> FileInspection:
    """The full pass: stream a file's bytes once through the decoder and the CSV reader."""
    stored = _Stored(gzipped=gzipped)
    scan = _Scan()
    text = _decoded_lines(_with_head(stored.content(chunks), _HEAD_BYTES), scan)
    structure = _CsvStructure(text, contract)
    # Drain whatever the CSV pass did not consume, so size, hash and byte checks cover the file.
    for _ in text:
        pass
    reason = (
        _empty(stored.size)
        or stored.problem()
        or _empty_content(scan, gzipped)
        or _compressed(scan, gzipped)
        or _utf16(scan)
        or _binary(scan, gzipped)
        or scan.utf8_error
        or structure.reason(scan.ends_with_newline)
    )
    return FileInspection(
        size=stored.size,
        sha256=stored.digest.hexdigest(),
        reason=reason,
        header=structure.header,
        records=structure.records,
        multiline=structure.multiline,
        line_shifts=structure.line_shifts(),
    )


# ----------------------------------------------------------------------------- plain files

# Bytes a plain file may hold: everything but the control bytes _BINARY looks for.
_PLAIN_BYTES = bytes(b for b in range(256) if not (b <= 0x08 or b == 0x0B or 0x0E <= b <= 0x1F))


def _plain_inspection(chunks: Iterable[bytes], contract: Contract, *, gzipped: bool = False) -> FileInspection | None:
    """The inspection of a clean file without quotes, CRs or blank lines; None for any other file.

    For such a file records = newlines - 1 (+1 for a last line without newline), nothing spans
    lines and line numbers are record index + 2, so only the header and the last line need
    the CSV reader. Everything unusual (and every reason to reject) is left to the full pass.
    """
    stored = _Stored(gzipped=gzipped)
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    newlines = 0
    head = first_line = tail = b""  # tail: the bytes after the last newline so far
    previous_last = b"\n"
    for chunk in stored.content(chunks):
        if not chunk:
            continue
        if (
            b'"' in chunk
            or b"\r" in chunk
            or b"\n\n" in chunk
            or (previous_last == b"\n" and chunk[:1] == b"\n")
            or chunk.translate(None, _PLAIN_BYTES)
        ):
            return None
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError:
            return None
        if len(head) < _HEAD_BYTES:
            head += chunk[: _HEAD_BYTES - len(head)]
        if newlines == 0:
            first_line += chunk.split(b"\n", 1)[0]
        count = chunk.count(b"\n")
        newlines += count
        tail = chunk[chunk.rfind(b"\n") + 1 :] if count else tail + chunk
        previous_last = chunk[-1:]
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return None
    if stored.problem() is not None:
        return None
    if newlines == 0 or head.startswith(codecs.BOM_UTF8) or any(head.startswith(m) for m, _ in _MAGIC):
        return None
    header = tuple(name.strip() for name in next(csv.reader([first_line.decode()])))
    records = newlines - 1 + (1 if tail else 0)
    if records == 0 or header_problem(header, contract) is not None:
        return None
    if tail and len(next(csv.reader([tail.decode()]))) < len(header):
        return None  # maybe truncated: the full pass words it
    return FileInspection(size=stored.size, sha256=stored.digest.hexdigest(), reason=None, header=header, records=records)


# ----------------------------------------------------------------------------- byte level


@dataclass
class _Stored:
    """The object's own bytes as they stream by (size and hash of what is stored, compressed
    or not) and, for a ``.gz`` file, the gunzipped content with the problems of the gzip data."""

    gzipped: bool = False
    size: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)
    head: bytes = b""
    gzip_error: str | None = None
    truncated: bool = False

    def content(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """The content chunks: the bytes themselves, or their decompression (concatenated members too)."""
        inflater: Any = zlib.decompressobj(wbits=31) if self.gzipped else None  # gzip header + trailer
        fed = False  # the current gzip member got input and has not ended yet
        for chunk in chunks:
            if not chunk:
                continue
            self.size += len(chunk)
            self.digest.update(chunk)
            if len(self.head) < 2:
                self.head += chunk[: 2 - len(self.head)]
            if inflater is None:
                if not self.gzipped:
                    yield chunk
                continue  # a gzip error: keep hashing the rest, decode nothing more
            data = chunk
            while True:
                try:
                    out = inflater.decompress(data, CHUNK_BYTES)  # bounded: no decompression bomb in memory
                except zlib.error as exc:
                    self.gzip_error = str(exc)
                    inflater = None
                    break
                fed = fed or bool(data)
                if out:
                    yield out
                if inflater.eof:  # a member ended; another may follow (cat a.gz b.gz)
                    data, inflater, fed = inflater.unused_data, zlib.decompressobj(wbits=31), False
                    if not data:
                        break
                    continue
                data = inflater.unconsumed_tail
                if not data and len(out) < CHUNK_BYTES:
                    break
        self.truncated = inflater is not None and fed

    def problem(self) -> str | None:
        """Why the stored bytes cannot be decompressed, with the fix; None for a plain file."""
        if not self.gzipped or self.size == 0:
            return None
        if self.head != _GZIP_MAGIC:
            return "file is named .gz but is not gzip-compressed: rename it to .csv (or compress it with gzip)"
        if self.gzip_error is not None:
            return f"gzip data is corrupt ({self.gzip_error}): compress the .csv again (gzip file.csv) and upload the .csv.gz"
        if self.truncated:
            return "gzip data is truncated (incomplete upload?): upload the whole .csv.gz again"
        return None


def _with_head(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The same bytes, the first chunk holding at least ``size`` of them (magic and BOM checks)."""
    head = b""
    iterator = iter(chunks)
    for chunk in iterator:
        head += chunk
        if len(head) >= size:
            break
    if head:
        yield head
    yield from iterator


def _decoded_lines(chunks: Iterable[bytes], scan: _Scan) -> Iterator[str]:
    """Lines split on '\\n' only (a quoted '\\r' must not end a line), with their ending.

    A leading UTF-8 byte-order mark is skipped (offsets still count it). Stops yielding text
    at the first invalid UTF-8 byte but keeps reading the rest.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0  # bytes fed to the decoder so far
    lines_done = 0
    pending = ""
    decoding = True
    last = b""
    for raw in chunks:  # the first chunk holds at least _HEAD_BYTES (_with_head)
        if not raw:
            continue
        if len(scan.head) < _HEAD_BYTES:
            scan.head += raw[: _HEAD_BYTES - len(scan.head)]
        if scan.binary_at is None:
            hit = _BINARY.search(raw)
            if hit:
                scan.binary_at, scan.binary_byte = offset + hit.start(), raw[hit.start()]
        last = chunk = raw
        if offset == 0 and raw.startswith(codecs.BOM_UTF8):
            scan.bom = True
            offset, chunk = len(codecs.BOM_UTF8), raw[len(codecs.BOM_UTF8) :]
        if decoding:
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                # exc.start counts from the decoder's buffered bytes plus this chunk.
                buffered = len(exc.object) - len(chunk)
                at = offset - buffered + exc.start
                good = exc.object[: exc.start].decode("utf-8", errors="replace")
                line = lines_done + (pending + good).count("\n") + 1
                scan.utf8_error = f"not valid UTF-8: byte 0x{exc.object[exc.start]:02x} at offset {at} (line {line})"
                decoding = False
                text = ""
            pending += text
            *complete, pending = pending.split("\n")
            for line_text in complete:
                lines_done += 1
                yield line_text + "\n"
        offset += len(chunk)
        scan.size = offset
    scan.ends_with_newline = last.endswith(b"\n")
    if decoding:
        try:
            pending += decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            at = offset - len(exc.object) + exc.start
            scan.utf8_error = f"not valid UTF-8: byte 0x{exc.object[exc.start]:02x} at offset {at} (line {lines_done + 1})"
            return
        if pending:
            yield pending


def _empty(size: int) -> str | None:
    return "file is empty (0 bytes)" if size == 0 else None


def _empty_content(scan: _Scan, gzipped: bool) -> str | None:
    if scan.size == 0 and gzipped:
        return "gzip data decompresses to nothing (0 bytes): compress the .csv itself"
    if scan.bom and scan.size == len(codecs.BOM_UTF8):
        return "file holds only a UTF-8 byte-order mark: no header row"
    return None


def _compressed(scan: _Scan, gzipped: bool) -> str | None:
    for magic, kind in _MAGIC:
        if not scan.head.startswith(magic):
            continue
        if gzipped:
            if kind == "gzip":
                return "file is gzip-compressed twice: decompress it once (gunzip) and upload the .csv.gz"
            return f"file is gzip-compressed {kind} data, not CSV text: gzip the .csv itself (gzip file.csv)"
        if kind == "gzip":
            return "file is gzip-compressed but named .csv: rename it to .csv.gz"
        if kind == "zip":
            return "file is zip-compressed, not CSV text: unzip it and upload the .csv (or gzip the .csv as .csv.gz)"
        return f"file is {kind}-compressed, not CSV text: decompress it and upload the .csv (or gzip it as .csv.gz)"
    return None


def _utf16(scan: _Scan) -> str | None:
    if scan.head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return 'file is UTF-16 encoded, not UTF-8: save it as UTF-8 (in Excel: "CSV UTF-8 (Comma delimited)")'
    return None


def _binary(scan: _Scan, gzipped: bool) -> str | None:
    if scan.binary_at is None:
        return None
    where = " after decompression: the .gz does not hold CSV text (gzip the .csv itself)" if gzipped else ""
    return f"binary content: byte 0x{scan.binary_byte:02x} at offset {scan.binary_at}{where}"


# ----------------------------------------------------------------------------- CSV level


class _CsvStructure:
    """Header and record structure, consumed lazily from the decoded lines."""

    def __init__(self, lines: Iterator[str], contract: Contract) -> None:
        self.contract = contract
        self.header: tuple[str, ...] = ()
        self.records = 0
        self.multiline = False
        self.unterminated_from: int | None = None
        self.blank_first_line = False
        self.last_fields = 0
        self._shifts: list[tuple[int, int]] = []
        self._too_many_shifts = False
        self._header_problem: str | None = None
        self._last_start = 0
        self._run(lines)

    def _run(self, lines: Iterator[str]) -> None:
        record_lines: list[str] = []  # the physical lines of the record being read

        def tracked() -> Iterator[str]:
            for line in lines:
                record_lines.append(line)
                yield line

        reader = csv.reader(tracked())
        first = next(reader, None)
        if first is None:
            return
        if first == []:
            self.blank_first_line = True
            return
        self.header = tuple(name.strip() for name in first)
        self._header_problem = header_problem(self.header, self.contract)
        if self._header_problem is not None:
            return  # no point reading rows against the wrong header
        record_lines.clear()
        start = reader.line_num + 1
        shift = 0
        last_record: list[str] = []
        for record in reader:
            end = reader.line_num
            last_record, record_lines[:] = list(record_lines), []
            if record == []:
                start = end + 1
                continue
            if end > start:
                self.multiline = True
            delta = start - (self.records + 2)
            if delta != shift:
                shift = delta
                if len(self._shifts) < MAX_LINE_SHIFTS:
                    self._shifts.append((self.records, delta))
                else:
                    self._too_many_shifts = True
            self.records += 1
            self.last_fields = len(record)
            self._last_start = start
            start = end + 1
        if last_record and _ends_inside_quotes("".join(last_record)):
            self.unterminated_from = self._last_start

    def reason(self, ends_with_newline: bool) -> str | None:
        if self.blank_first_line:
            return "first line is blank: no header row"
        if not self.header:
            return None  # empty file: reported by the byte checks
        if self._header_problem is not None:
            return self._header_problem
        if self.unterminated_from is not None:
            return f"file ends inside a quoted field opened on line {self.unterminated_from}"
        if self.records == 0:
            return "file has a header but no data rows"
        if not ends_with_newline and self.last_fields < len(self.header):
            return f"last line is truncated: {self.last_fields} of {len(self.header)} fields and no final newline"
        return None

    def line_shifts(self) -> tuple[tuple[int, int], ...] | None:
        return None if self._too_many_shifts else tuple(self._shifts)


def _ends_inside_quotes(text: str) -> bool:
    """Lenient csv.reader ends a record at EOF even inside quotes; the strict one says so."""
    try:
        for _ in csv.reader(io.StringIO(text), strict=True):
            pass
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def header_problem(header: tuple[str, ...], contract: Contract) -> str | None:
    """The header-level reason a file cannot be read against ``contract``, or None."""
    if len(header) == 1:
        for delimiter, shown in _OTHER_DELIMITERS:
            if delimiter in header[0]:
                parts = len(header[0].split(delimiter))
                return f"wrong delimiter: header splits on '{shown}' into {parts} columns; expected ','"
    duplicated = [name for name, count in Counter(header).items() if count > 1]
    if duplicated:
        return f"header repeats column(s) {', '.join(duplicated)}"
    expected = set(contract.column_names)
    missing = [c for c in contract.column_names if c not in header]
    unexpected = [c for c in header if c not in expected]
    if missing and unexpected:
        return f"header is missing column(s) {', '.join(missing)} and has unexpected column(s) {', '.join(unexpected)} (renamed?)"
    if missing:
        return f"header is missing column(s) {', '.join(missing)}"
    if unexpected:
        return f"header has unexpected column(s) {', '.join(unexpected)}"
    return None
