"""fetch_jars against a local file:// Maven layout and a localhost HTTP server: no network."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import sys
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from types import ModuleType

import pytest

FETCH_JARS = Path(__file__).resolve().parents[2] / "spark" / "fetch_jars.py"


def _load() -> ModuleType:
    # Loaded from its file, the way `python spark/fetch_jars.py` runs it (as a script, not a package module).
    spec = importlib.util.spec_from_file_location("fetch_jars", FETCH_JARS)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["fetch_jars"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


fj = _load()

GOOD = b"PK\x03\x04 pretend this is a jar"


def _publish(repo: Path, group: str, artifact: str, version: str, content: bytes) -> str:
    folder = repo.joinpath(*group.split("."), artifact, version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{artifact}-{version}.jar").write_bytes(content)
    return f"{artifact}-{version}.jar"


def _lock(path: Path, entries: list[tuple[str, str, str, bytes]]) -> Path:
    lines = ["# test lock"]
    for group, artifact, version, content in entries:
        lines.append(f"{group}:{artifact}:{version}  {hashlib.sha256(content).hexdigest()}  {artifact}-{version}.jar")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    _publish(root, "org.example", "good", "1.0", GOOD)
    _publish(root, "org.example", "tampered", "2.0", b"not what the lock says")
    return root


def test_fetch_downloads_verifies_and_skips_valid(repo: Path, tmp_path: Path) -> None:
    lock = _lock(tmp_path / "jars.lock", [("org.example", "good", "1.0", GOOD)])
    dest = tmp_path / "jars"

    paths = fj.fetch(dest, repo.as_uri(), lock=lock)

    assert paths == [dest / "good-1.0.jar"]
    assert paths[0].read_bytes() == GOOD
    assert fj.check(dest, lock=lock) == []
    # Already present and valid: not downloaded again (the repo copy is gone now).
    (repo / "org" / "example" / "good" / "1.0" / "good-1.0.jar").unlink()
    assert fj.fetch(dest, repo.as_uri(), lock=lock) == paths
    assert list(dest.iterdir()) == paths  # no temp files left behind


def test_sha_mismatch_is_rejected_and_names_the_jar(repo: Path, tmp_path: Path) -> None:
    # The lock expects GOOD, the repository serves other bytes.
    lock = _lock(tmp_path / "jars.lock", [("org.example", "tampered", "2.0", GOOD)])
    dest = tmp_path / "jars"

    with pytest.raises(fj.FetchError, match=r"org\.example:tampered:2\.0.*sha256 mismatch"):
        fj.fetch(dest, repo.as_uri(), lock=lock)

    assert list(dest.iterdir()) == []  # nothing partial or unverified is left in place
    assert [j.artifact for j in fj.check(dest, lock=lock)] == ["tampered"]


def test_corrupt_local_copy_is_replaced(repo: Path, tmp_path: Path) -> None:
    lock = _lock(tmp_path / "jars.lock", [("org.example", "good", "1.0", GOOD)])
    dest = tmp_path / "jars"
    dest.mkdir()
    (dest / "good-1.0.jar").write_bytes(b"truncated")

    assert [j.artifact for j in fj.check(dest, lock=lock)] == ["good"]
    fj.fetch(dest, repo.as_uri(), lock=lock)
    assert (dest / "good-1.0.jar").read_bytes() == GOOD


def test_missing_artifact_fails_naming_the_jar(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fj.time, "sleep", lambda _s: None)  # skip retry back-off
    lock = _lock(tmp_path / "jars.lock", [("org.example", "absent", "3.0", GOOD)])
    with pytest.raises(fj.FetchError, match=r"org\.example:absent:3\.0.*download .* failed"):
        fj.fetch(tmp_path / "jars", repo.as_uri(), lock=lock)


@pytest.fixture
def http_repo(repo: Path) -> Iterator[str]:
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(repo))
    handler.log_message = lambda *_a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_http_repo_and_cli(http_repo: str, tmp_path: Path) -> None:
    good = _lock(tmp_path / "good.lock", [("org.example", "good", "1.0", GOOD)])
    bad = _lock(tmp_path / "bad.lock", [("org.example", "tampered", "2.0", GOOD)])
    dest = tmp_path / "jars"

    assert fj.main(["--dest", str(dest), "--lock", str(good), "--check"]) == 1
    assert fj.main(["--dest", str(dest), "--lock", str(good), "--repo", http_repo]) == 0
    assert fj.main(["--dest", str(dest), "--lock", str(good), "--check"]) == 0
    assert fj.main(["--dest", str(dest), "--lock", str(bad), "--repo", http_repo]) == 1
    assert not (dest / "tampered-2.0.jar").exists()


def test_malformed_lock_line_is_rejected(tmp_path: Path) -> None:
    lock = tmp_path / "jars.lock"
    lock.write_text("org.example:good:1.0  not-a-sha  good-1.0.jar\n")
    with pytest.raises(ValueError, match=r"jars.lock:1"):
        fj.read_lock(lock)


def test_project_lock_is_well_formed() -> None:
    jars = fj.read_lock()
    names = [j.filename for j in jars]
    assert len(names) == len(set(names))
    coords = {(j.group, j.artifact) for j in jars}
    assert ("org.apache.hadoop", "hadoop-aws") in coords
    assert ("io.delta", "delta-spark_4.2_2.13") in coords
    assert ("software.amazon.awssdk", "bundle") not in coords  # 686 MB: individual modules instead
