"""PROPOSAL (not used by the jobs): a byte-level fast path for spark/jobs/filecheck.inspect_file.

docs/benchmarks.md shows the file checks are the largest single cost of validation: the
pass runs every line through three Python generators and ``csv.reader`` (~20 us per row
on this machine, single-threaded, before Spark starts). Most real files have no quote
character, no carriage return and no blank line; for those, every structural fact the
checks need follows from byte counts at C speed:

* records = newlines - 1 (+1 for a last line without newline), no multi-line record,
  no line shifts (line number = record index + 2);
* the header and the last line are parsed with ``csv.reader`` (two lines, not millions);
* binary bytes via ``bytes.translate(None, <allowed>)`` instead of a regex search;
* UTF-8 validity via the incremental decoder, whose output is discarded.

Any file with a quote, a CR, a blank line, invalid UTF-8 or binary content falls back to
the full ``inspect_file`` (the caller re-opens the stream), so reasons stay identical.
``python -m bench.filecheck_fast FILE...`` times both and checks they agree;
tests/corpus/** agrees file by file (see docs/benchmarks.md).
"""

from __future__ import annotations

import codecs
import csv
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from cartflow.jobs.contracts import Contract
from cartflow.jobs.filecheck import FileInspection, header_problem, inspect_file

_ALLOWED = bytes(b for b in range(256) if not (b <= 0x08 or b == 0x0B or 0x0E <= b <= 0x1F))


def inspect_file_fast(open_chunks: Callable[[], Iterable[bytes]], contract: Contract) -> FileInspection:
    import hashlib

    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    size = newlines = 0
    head = b""
    first_line = b""
    tail = b""  # bytes after the last newline seen so far
    prev_last = b"\n"
    slow = False
    for chunk in open_chunks():
        if not chunk:
            continue
        digest.update(chunk)
        size += len(chunk)
        if len(head) < 8:
            head += chunk[: 8 - len(head)]
        if slow:
            continue  # still hashing; the full check runs afterwards anyway
        if (
            b'"' in chunk
            or b"\r" in chunk
            or b"\n\n" in chunk
            or (prev_last == b"\n" and chunk[:1] == b"\n")
            or chunk.translate(None, _ALLOWED)
        ):
            slow = True
            continue
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError:
            slow = True
            continue
        if newlines == 0:
            first_line += chunk.split(b"\n", 1)[0]
        n = chunk.count(b"\n")
        newlines += n
        tail = chunk[chunk.rfind(b"\n") + 1 :] if n else tail + chunk
        prev_last = chunk[-1:]
    if slow or size == 0 or newlines == 0 or head.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return inspect_file(open_chunks(), contract)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return inspect_file(open_chunks(), contract)
    header = tuple(name.strip() for name in next(csv.reader([first_line.decode()])))
    problem = header_problem(header, contract)
    records = newlines - 1 + (1 if tail else 0)
    if problem is not None or records == 0 or any(m for m in (b"\x1f\x8b", b"PK\x03\x04", b"BZh") if head.startswith(m)):
        return inspect_file(open_chunks(), contract)  # rare: let the full pass word the reason
    if tail:  # no final newline: the last line may be truncated
        fields = len(next(csv.reader([tail.decode()])))
        if fields < len(header):
            return inspect_file(open_chunks(), contract)
    return FileInspection(size=size, sha256=digest.hexdigest(), reason=None, header=header, records=records)


def _chunks(path: Path) -> Callable[[], Iterable[bytes]]:
    def gen() -> Iterable[bytes]:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                yield chunk

    return gen


def main(argv: list[str]) -> int:
    from cartflow.jobs.contracts import load_contracts

    contracts = load_contracts()
    bad = 0
    for name in argv:
        path = Path(name)
        contract = contracts[path.parent.name]
        t0 = time.perf_counter()
        slow = inspect_file(_chunks(path)(), contract)
        t1 = time.perf_counter()
        fast = inspect_file_fast(_chunks(path), contract)
        t2 = time.perf_counter()
        same = slow == fast
        bad += not same
        print(f"{path}: inspect_file {t1 - t0:.2f} s, fast path {t2 - t1:.2f} s, identical: {same}")
        if not same:
            print(f"  full: {slow}\n  fast: {fast}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
