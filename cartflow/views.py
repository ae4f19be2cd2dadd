"""Read models for people: batches, per-file state, KPI tables; and uploading a folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cartflow.models import RAW_PREFIX, BatchStatus
from cartflow.services.batches import BatchTable, Chunk
from cartflow.services.deps import Deps, scan_items

# Terminal state of a raw file, derived from its event and its batch (one source of truth each).
FILE_STATE = {
    BatchStatus.PENDING.value: "batched (pending)",
    BatchStatus.PROCESSING.value: "processing",
    BatchStatus.DONE.value: "archived",
    BatchStatus.FAILED.value: "failed (kept in raw/)",
}


TERMINAL_FILE_STATES = frozenset({"archived", "failed (kept in raw/)", "rejected"})


@dataclass(frozen=True)
class FileState:
    s3_path: str
    group_key: str
    state: str
    batch_id: str | None
    reason: str | None


def scan(deps: Deps, table: str) -> list[dict[str, Any]]:
    return scan_items(deps.clients.dynamodb, table)


def batches(deps: Deps) -> list[Chunk]:
    return BatchTable(deps).all()


def files(deps: Deps, known_batches: list[Chunk] | None = None) -> list[FileState]:
    chunks = {c.batch_id: c for c in (batches(deps) if known_batches is None else known_batches)}
    out = []
    for e in scan(deps, deps.settings.events_table):
        batch_id = e.get("batch_id")
        if e.get("status") == "rejected":
            state, reason = "rejected", e.get("reason")
        elif batch_id and batch_id in chunks:
            chunk = chunks[batch_id]
            state, reason = FILE_STATE[chunk.status], chunk.error
        else:
            state, reason = "waiting (debounce)", None
        out.append(FileState(e["s3_path"], e["group_key"], state, batch_id, reason))
    return sorted(out, key=lambda f: (f.group_key, f.s3_path))


def is_settled(deps: Deps, expected_files: int) -> bool:
    """At least `expected_files` files seen, each in a terminal state, and no batch in flight."""
    chunks = batches(deps)
    fs = files(deps, chunks)
    if len(fs) < expected_files or any(f.state not in TERMINAL_FILE_STATES for f in fs):
        return False
    return all(b.status in (BatchStatus.DONE.value, BatchStatus.FAILED.value) for b in chunks)


def order_kpis(deps: Deps) -> list[dict[str, Any]]:
    return sorted(scan(deps, deps.settings.order_kpis_table), key=lambda r: r["order_date"])


def category_kpis(deps: Deps) -> list[dict[str, Any]]:
    return sorted(scan(deps, deps.settings.category_kpis_table), key=lambda r: (r["order_date"], r["category"]))


def upload_dir(deps: Deps, root: Path) -> list[str]:
    """Upload every CSV under root to raw/, keeping the relative path (root/orders/x.csv -> raw/orders/x.csv)."""
    keys = []
    for path in sorted(root.rglob("*.csv")):
        key = RAW_PREFIX + path.relative_to(root).as_posix()
        deps.clients.s3.upload_file(str(path), deps.settings.bucket, key)
        keys.append(key)
    return keys
