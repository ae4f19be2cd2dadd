"""Liveness files for the local runners, read by container healthchecks.

A runner touches ``<state_dir>/<name>.alive`` on every loop iteration; a healthcheck calls
``is_alive`` (or ``python -m cartflow.local.liveness PATH MAX_AGE``) and fails when the file
is older than ``max_age_s``. Pick ``max_age_s`` above the longest single loop iteration
(e.g. the SQS long-poll wait plus a handler's timeout), or a busy runner looks dead.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

from cartflow.core.config import Settings

log = logging.getLogger(__name__)


class Liveness:
    """The liveness file of one named runner."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.path = Path(settings.state_dir) / f"{name}.alive"

    def touch(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
            # touch() on an existing file only updates the mtime when the platform says so.
            os.utime(self.path)
        except OSError:
            # A full/readonly disk must not stop event processing; the healthcheck will notice.
            log.warning("cannot touch liveness file %s", self.path, exc_info=True)


def is_alive(path: str | os.PathLike[str], max_age_s: float) -> bool:
    """True when ``path`` exists and was touched within the last ``max_age_s`` seconds."""
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return False
    return time.time() - mtime <= max_age_s


def main(argv: list[str] | None = None) -> int:
    """Healthcheck entry point: exit 0 when alive, 1 otherwise."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.stderr.write("usage: python -m cartflow.local.liveness PATH MAX_AGE_SECONDS\n")
        return 2
    return 0 if is_alive(args[0], float(args[1])) else 1


if __name__ == "__main__":
    raise SystemExit(main())
