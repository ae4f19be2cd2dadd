"""1,000 small files in one burst through the real S3 -> SQS -> ingest -> debouncer -> stream
trigger path (every function its own process, MiniStack): every upload recorded once, the
burst cut into chunks of at most max_files_per_chunk with each file in exactly one, one
batch in flight, no throttling or other error in any component's log.

No spark-runner: the jobs' side of many files per batch is covered with real Spark by the
other stack tests; here the point is the event path under a burst.
"""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from cartflow.core.batch_table import BatchTable
from cartflow.local.stack import EmbeddedStack
from cartflow.ops.actions import audit
from cartflow.ops.views import files

pytestmark = pytest.mark.integration
N = 1000
MAX_FILES = 99


@pytest.fixture(scope="module")
def settings(settings):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={"debounce_seconds": 5, "max_files_per_chunk": MAX_FILES})


def test_a_burst_of_1000_uploads_is_recorded_once_and_chunked_once(settings, stack_resources, deps) -> None:  # type: ignore[no-untyped-def]
    s3, bucket = deps.clients.s3, deps.settings.bucket
    keys = [f"raw/order_lines/burst/{i:04d}.csv" for i in range(N)]
    body = b"order_id,customer_id,order_date,category,product_id,quantity,unit_price,returned\n"
    with EmbeddedStack(settings, ("ingest", "stream-trigger", "debouncer", "controller")) as stack:
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:  # a burst: uploads overlap
            list(
                pool.map(
                    lambda k: s3.put_object(
                        Bucket=bucket, Key=k, Body=body + f"B{k[-8:-4]},C1,2025-07-06,Books,P1,1,1.00,false\n".encode()
                    ),
                    keys,
                )
            )
        table = BatchTable(deps)
        deadline = time.monotonic() + 300
        while sum(len(c.file_paths) for c in table.all()) < N:
            stack.check_alive()
            assert time.monotonic() < deadline, f"{sum(len(c.file_paths) for c in table.all())} of {N} files batched"
            time.sleep(1)
        elapsed = time.monotonic() - started
        chunks = table.all()
        logs = {p.name: p.read_text(errors="replace") for p in stack.log_dir.glob("*.log")}

    recorded = Counter(f.s3_path for f in files(deps))
    assert sorted(recorded) == sorted(f"s3://{bucket}/{k}" for k in keys) and set(recorded.values()) == {1}
    in_chunks = Counter(p for c in chunks for p in c.file_paths)
    assert set(in_chunks.values()) == {1} and len(in_chunks) == N
    # Windows follow the S3 event times: when ingest lags the burst, quiet windows close sooner
    # and chunks are smaller; never larger than the limit.
    assert all(len(c.file_paths) <= MAX_FILES for c in chunks) and len(chunks) >= -(-N // MAX_FILES)
    assert [c.status for c in chunks].count("processing") <= 1  # one batch in flight (nobody runs the jobs)
    for name, text in logs.items():
        if name.startswith(("ingest", "debouncer", "stream-trigger", "controller")):
            assert "Throttl" not in text and "Traceback" not in text, (name, text[-2000:])
    assert audit(deps, stuck_after_s=3600) == []
    print(f"\nburst: {N} uploads recorded and chunked in {elapsed:.1f} s into {len(chunks)} chunks")
