"""The file checks' two paths (byte-count fast path, full CSV pass) must never disagree."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from cartflow.local.fixturegen import generate
from spark.jobs import filecheck
from spark.jobs.contracts import load_contracts
from tests.corpus_expect import corpus_files, relative


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("chunk_size", [1 << 20, 7, 1])
def test_fast_path_and_full_pass_agree_on_every_corpus_file(chunk_size: int) -> None:
    contracts = load_contracts()
    differ, fast = [], 0
    for dataset, path in corpus_files():
        data, gzipped = path.read_bytes(), filecheck.is_gzip_name(path.name)
        full = filecheck.inspect_stream(_chunks(data, chunk_size), contracts[dataset], gzipped=gzipped)
        quick = filecheck._plain_inspection(_chunks(data, chunk_size), contracts[dataset], gzipped=gzipped)
        if quick is not None:
            fast += 1
            if quick != full:
                differ.append((relative(str(path)), quick, full))
        if filecheck.inspect_file(partial(_chunks, data, chunk_size), contracts[dataset], name=path.name) != full:
            differ.append((relative(str(path)), "inspect_file", full))
    assert differ == []
    assert fast >= 10  # the corpus has plain files: the fast path is really exercised


def test_fast_path_takes_plain_files_and_leaves_every_rejection_to_the_full_pass(tmp_path: Path) -> None:
    contracts = load_contracts()
    (generated,) = generate("order_lines", 3000, seed=3, out_dir=tmp_path)["order_lines"]
    data = Path(generated).read_bytes()
    quick = filecheck._plain_inspection(_chunks(data, 4096), contracts["order_lines"])
    assert quick == filecheck.inspect_stream(_chunks(data, 4096), contracts["order_lines"])
    assert quick is not None and quick.records == data.count(b"\n") - 1

    for dataset, path in corpus_files():
        gzipped = filecheck.is_gzip_name(path.name)
        full = filecheck.inspect_stream(_chunks(path.read_bytes(), 1 << 20), contracts[dataset], gzipped=gzipped)
        if full.rejected:
            assert filecheck._plain_inspection(_chunks(path.read_bytes(), 1 << 20), contracts[dataset], gzipped=gzipped) is None


def test_a_quote_after_the_first_chunk_sends_the_file_to_the_full_pass(tmp_path: Path) -> None:
    contract = load_contracts()["order_lines"]
    (path,) = generate("order_lines", 500, seed=5, out_dir=tmp_path)["order_lines"]
    data = Path(path).read_bytes()
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[1]
    first, rest = last.split(b",", 1)
    quoted = data + b'"' + first + b'",' + rest + b"\n"  # a valid CSV quote, far past the first chunk
    assert filecheck._plain_inspection(_chunks(quoted, 1024), contract) is None
    full = filecheck.inspect_stream(_chunks(quoted, 1024), contract)
    assert full.reason is None and full.records == quoted.count(b"\n") - 1
    assert filecheck.inspect_file(lambda: _chunks(quoted, 1024), contract) == full
