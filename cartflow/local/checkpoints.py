"""Durable per-shard checkpoints for the DynamoDB Streams runner.

Lambda's event source mapping remembers, per shard, the last sequence number a handler
acknowledged; a restarted local runner must do the same or it would replay (or, with
LATEST, skip) records. The state is one small JSON file per runner, rewritten atomically
(temp file + fsync + ``os.replace``) so a crash mid-write leaves the previous version.

Entries are keyed by stream ARN first: a re-created table gets a new stream whose shard
ids can repeat the old ones (MiniStack uses one fixed shard id for every stream).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from cartflow.core.config import Settings
from cartflow.core.exceptions import CartflowError

log = logging.getLogger(__name__)

_VERSION = 1


class CheckpointError(CartflowError, RuntimeError):
    """The checkpoint file exists but cannot be understood; refusing to guess a position."""


class CheckpointStore:
    """``{stream_arn: {shard_id: {"sequence_number": str | None, "finished": bool}}}`` on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._streams: dict[str, dict[str, dict[str, Any]]] = {}
        self._load()

    @classmethod
    def for_source(cls, settings: Settings, name: str) -> CheckpointStore:
        return cls(Path(settings.state_dir) / f"{name}.checkpoints.json")

    # --- reads -------------------------------------------------------------------
    def sequence_number(self, stream_arn: str, shard_id: str) -> str | None:
        entry = self._streams.get(stream_arn, {}).get(shard_id)
        return entry.get("sequence_number") if entry else None

    def is_finished(self, stream_arn: str, shard_id: str) -> bool:
        entry = self._streams.get(stream_arn, {}).get(shard_id)
        return bool(entry and entry.get("finished"))

    def stream_arns(self) -> list[str]:
        """Streams with state, oldest first (dicts keep insertion order, JSON too)."""
        return list(self._streams)

    def has_unfinished_shards(self, stream_arn: str) -> bool:
        return any(not e.get("finished") for e in self._streams.get(stream_arn, {}).values())

    # --- writes (each one is durable before it returns) --------------------------
    def set_sequence_number(self, stream_arn: str, shard_id: str, sequence_number: str) -> None:
        entry = self._streams.setdefault(stream_arn, {}).setdefault(shard_id, {"finished": False})
        entry["sequence_number"] = sequence_number
        self._save()

    def mark_finished(self, stream_arn: str, shard_id: str) -> None:
        entry = self._streams.setdefault(stream_arn, {}).setdefault(shard_id, {"sequence_number": None})
        entry["finished"] = True
        self._save()

    def forget_stream(self, stream_arn: str) -> None:
        if self._streams.pop(stream_arn, None) is not None:
            self._save()

    def forget_shards_except(self, stream_arn: str, keep: set[str]) -> None:
        """Drop shards the stream no longer lists (trimmed after 24 h), so the file stays small."""
        shards = self._streams.get(stream_arn)
        if not shards:
            return
        gone = [s for s in shards if s not in keep]
        for shard_id in gone:
            del shards[shard_id]
        if gone:
            self._save()

    # --- file I/O -------------------------------------------------------------------
    def _load(self) -> None:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        try:
            data = json.loads(raw)
            if data.get("version") != _VERSION or not isinstance(data.get("streams"), dict):
                raise ValueError(f"unsupported checkpoint format version {data.get('version')!r}")
            self._streams = {
                str(arn): {str(sid): dict(entry) for sid, entry in shards.items()} for arn, shards in data["streams"].items()
            }
        except (ValueError, AttributeError, TypeError) as exc:
            # Starting over silently would replay or skip a day of records: make it loud.
            raise CheckpointError(f"unreadable checkpoint file {self.path}: {exc}") from exc

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps({"version": _VERSION, "streams": self._streams}, indent=1, sort_keys=False)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._fsync_dir()

    def _fsync_dir(self) -> None:
        # Makes the rename itself durable; not every filesystem allows opening a directory.
        try:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)
