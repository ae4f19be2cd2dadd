"""No tracked file names a path that exists only on somebody's machine.

A fresh clone (CI's, a new user's) has none of the work tree, the root user's home or another
user's home of the machine a file was written on: a test or script that reads such a path
passes only there.
Homes inside the images (`/home/cartflow`, the non-root user the Dockerfiles create) are
paths of the image, not of a machine, and are allowed.
"""

from __future__ import annotations

import re
import subprocess

from tests.conftest import REPO

# Absolute work-tree or home paths: under work, root, Users, or home/<user> (the images' own
# home/cartflow excepted).
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|root|Users|home/(?!cartflow\b)[A-Za-z][\w.-]*)/[\w.~-]")


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def test_pattern_catches_machine_paths() -> None:
    # Built from pieces, so that this file itself names no such path.
    bad = [
        'MINISTACK_BIN = Path("/' + 'work/ministack-venv/bin/ministack")',
        "cd /" + "root/.cache/x",
        "/" + "home/alice/src/cartflow",
        "/" + "Users/bob/Downloads/a.csv",
    ]
    for line in bad:
        assert MACHINE_PATH.search(line), line
    fine = ["WORKDIR /home/cartflow", "file:///srv/x", "s3://bucket/work/x", "raw/orders/a.csv", "https://example.org/root/x"]
    for line in [*fine, "~/.cache/cartflow"]:
        assert not MACHINE_PATH.search(line), line


def test_no_tracked_file_names_a_machine_path() -> None:
    found = []
    for name in _tracked_files():
        path = REPO / name
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # binary fixtures, or a file deleted but not yet committed
        for number, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "absolute paths of a machine in tracked files:\n" + "\n".join(found)
