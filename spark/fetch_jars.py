#!/usr/bin/env python3
"""Download the pinned Spark jars (Delta Lake, S3A + AWS SDK v2) listed in jobs/jars.lock.

Jars are resolved ONCE into a cache directory (or baked into an image with ``--dest``),
never at job start: ``spark.jobs.session.build_spark`` only checks they are there.

    python spark/fetch_jars.py                 # into Settings().jars_dir
    python -m spark.fetch_jars --dest /opt/jars  # Docker build (no cartflow install needed)
    python spark/fetch_jars.py --check         # exit 1 if a jar is missing or corrupt
    python spark/fetch_jars.py --relock        # maintainers: re-resolve the lock (needs mvn + pyspark)

Stdlib only, plus two stdlib-only core modules (cartflow.core.exceptions, cartflow.core.retry),
so it runs in a bare build stage: spark/Dockerfile copies just those files and runs it as a
module. Every jar is verified against the sha256 in the lock; a file is written under a
temporary name and renamed only once verified.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cartflow.core.exceptions import CartflowError
from cartflow.core.retry import Backoff, retry

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
LOCK_PATH = Path(__file__).resolve().parent / "jobs" / "jars.lock"

_CHUNK = 1 << 16
_ATTEMPTS = 3  # transient network errors only; a sha mismatch is never retried
_BACKOFF = Backoff(base_s=1.0, max_s=2.0)  # waits of at most 1 s, then 2 s (jittered)
_TRANSIENT = (urllib.error.URLError, OSError, TimeoutError)
_TIMEOUT_S = 60


class FetchError(CartflowError, RuntimeError):
    """A locked jar could not be downloaded or did not match its sha256."""


@dataclass(frozen=True)
class LockedJar:
    group: str
    artifact: str
    version: str
    sha256: str
    filename: str

    @property
    def coordinate(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"

    def url(self, repo: str) -> str:
        return f"{repo.rstrip('/')}/{self.group.replace('.', '/')}/{self.artifact}/{self.version}/{self.filename}"


# ----------------------------------------------------------------------------- lock file


def read_lock(lock: Path = LOCK_PATH) -> list[LockedJar]:
    """Parse ``group:artifact:version  sha256  filename`` lines ('#' starts a comment)."""
    jars: list[LockedJar] = []
    for lineno, raw in enumerate(lock.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        coord = parts[0].split(":")
        if len(parts) != 3 or len(coord) != 3 or not re.fullmatch(r"[0-9a-f]{64}", parts[1]):
            raise ValueError(f"{lock}:{lineno}: expected 'group:artifact:version  sha256  filename', got {raw!r}")
        if "/" in parts[2] or not parts[2].endswith(".jar"):
            raise ValueError(f"{lock}:{lineno}: bad jar filename {parts[2]!r}")
        jars.append(LockedJar(coord[0], coord[1], coord[2], parts[1], parts[2]))
    return jars


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _is_valid(path: Path, jar: LockedJar) -> bool:
    return path.is_file() and sha256_of(path) == jar.sha256


# ----------------------------------------------------------------------------- fetch


class Progress:
    """Bytes downloaded so far, on stderr: a line per finished jar (plus a running total on a terminal)."""

    def __init__(self, jars: int, stream: TextIO | None = None) -> None:
        self.jars, self.done, self.bytes = jars, 0, 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._lock = threading.Lock()
        self._shown = 0.0

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes += n
            if self.tty and time.monotonic() - self._shown > 0.2:
                self._shown = time.monotonic()
                self.stream.write(f"\r  {self.done}/{self.jars} jars, {self.bytes / 1e6:.1f} MB ...")
                self.stream.flush()

    def finished(self, jar: LockedJar, size: int) -> None:
        with self._lock:
            self.done += 1
            lead = "\r\033[K" if self.tty else ""
            self.stream.write(
                f"{lead}  [{self.done}/{self.jars}] {jar.filename} {size / 1e6:.1f} MB (total {self.bytes / 1e6:.1f} MB)\n"
            )
            self.stream.flush()


def _download_once(jar: LockedJar, dest: Path, url: str, progress: Progress | None = None) -> None:
    """Stream one jar to a temp file in ``dest``, verify, then rename into place."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{jar.filename}.", suffix=".part", dir=dest)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:  # noqa: S310  https:// or file:// repos
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if progress is not None:
                    progress.add(len(chunk))
        if digest.hexdigest() != jar.sha256:
            raise FetchError(
                f"{jar.coordinate} ({jar.filename}): sha256 mismatch from {url}: expected {jar.sha256}, got {digest.hexdigest()}"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; images run jobs as a non-root user
        os.replace(tmp, dest / jar.filename)  # atomic: readers never see a partial jar
        if progress is not None:
            progress.finished(jar, size)
    finally:
        tmp.unlink(missing_ok=True)


def _download(jar: LockedJar, dest: Path, repo: str, progress: Progress | None = None) -> None:
    """``_download_once``, retried on transient network errors; FetchError when it cannot be had."""
    url = jar.url(repo)
    try:
        retry(
            lambda: _download_once(jar, dest, url, progress),
            attempts=_ATTEMPTS,
            backoff=_BACKOFF,
            retry_if=lambda exc: isinstance(exc, _TRANSIENT),
            sleep=time.sleep,
        )
    except _TRANSIENT as exc:
        raise FetchError(f"{jar.coordinate} ({jar.filename}): download from {url} failed: {exc}") from exc


def fetch(
    dest: Path, repo: str = MAVEN_CENTRAL, lock: Path = LOCK_PATH, workers: int = 8, show_progress: bool = False
) -> list[Path]:
    """Ensure every locked jar is in ``dest`` with the right sha256; return their paths (lock order).

    Files already present and valid are not downloaded again; ``show_progress`` prints the
    bytes downloaded on stderr as they come.
    """
    jars = read_lock(lock)
    dest.mkdir(parents=True, exist_ok=True)
    todo = [jar for jar in jars if not _is_valid(dest / jar.filename, jar)]
    progress = Progress(len(todo)) if show_progress and todo else None
    if progress is not None:
        print(f"downloading {len(todo)} of {len(jars)} jars from {repo} into {dest}", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        # list() re-raises the first FetchError; the other downloads still finish or fail cleanly.
        list(pool.map(lambda jar: _download(jar, dest, repo, progress), todo))
    return [dest / jar.filename for jar in jars]


def check(dest: Path, lock: Path = LOCK_PATH) -> list[LockedJar]:
    """Locked jars missing from ``dest`` or not matching their sha256."""
    return [jar for jar in read_lock(lock) if not _is_valid(dest / jar.filename, jar)]


# ----------------------------------------------------------------------------- relock
# Maintainer-only: resolve the pinned roots transitively with Maven, drop every artifact
# pyspark's jars/ already ships (two copies of a class on the classpath is a bug waiting
# to happen), and write the lock. Needs `mvn` and the pinned pyspark installed.

SPARK_BINARY = "4.2"  # Delta >= 4.1 artifacts carry the Spark version: delta-spark_<spark>_<scala>
SCALA_BINARY = "2.13"
DELTA_VERSION = "4.4.0"  # 4.4.1 is not on Maven Central; pip delta-spark is pinned to match
HADOOP_VERSION = "3.5.0"  # must equal pyspark's hadoop-client-api version
AWS_SDK_VERSION = "2.35.4"  # hadoop-project 3.5.0 <aws-java-sdk-v2.version>
ANALYTICS_ACCELERATOR_VERSION = "1.3.1"  # hadoop-project 3.5.0; hadoop-aws links it

ROOTS: tuple[tuple[str, str, str], ...] = (
    ("io.delta", f"delta-spark_{SPARK_BINARY}_{SCALA_BINARY}", DELTA_VERSION),
    ("io.delta", "delta-storage", DELTA_VERSION),
    ("org.apache.hadoop", "hadoop-aws", HADOOP_VERSION),
    # Individual SDK modules S3A links against, instead of the 686 MB `bundle`:
    ("software.amazon.awssdk", "s3", AWS_SDK_VERSION),
    ("software.amazon.awssdk", "s3-transfer-manager", AWS_SDK_VERSION),  # copy/rename, uploads
    ("software.amazon.awssdk", "sts", AWS_SDK_VERSION),  # assumed-role / web-identity credentials
    ("software.amazon.awssdk", "apache-client", AWS_SDK_VERSION),  # sync S3 client
    ("software.amazon.awssdk", "netty-nio-client", AWS_SDK_VERSION),  # async S3 client
    ("software.amazon.s3.analyticsaccelerator", "analyticsaccelerator-s3", ANALYTICS_ACCELERATOR_VERSION),
)
# Never wanted: the SDK bundle (replaced above) and wildfly-openssl (only for fs.s3a.ssl.channel.mode=openssl).
ALWAYS_EXCLUDED: tuple[tuple[str, str], ...] = (("software.amazon.awssdk", "bundle"), ("org.wildfly.openssl", "*"))
# Artifacts pyspark provides under another name.
PROVIDED_ALIASES = {"commons-logging": "jcl-over-slf4j"}
_DEP_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"


def _pyspark_jars_dir() -> Path:
    import importlib.util  # stdlib; find_spec does not import pyspark itself

    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("--relock needs pyspark installed (the pinned version)")
    return Path(next(iter(spec.submodule_search_locations))) / "jars"


def _jar_version(jars_dir: Path, artifact: str) -> str | None:
    for name in os.listdir(jars_dir):
        m = re.fullmatch(rf"{re.escape(artifact)}-(\d[^/]*)\.jar", name)
        if m:
            return m.group(1)
    return None


def _provided_by_pyspark(jars_dir: Path, artifact: str) -> bool:
    return _jar_version(jars_dir, PROVIDED_ALIASES.get(artifact, artifact)) is not None


def _pom(excluded: set[tuple[str, str]], managed: dict[tuple[str, str], str]) -> str:
    exclusions = "".join(
        f"<exclusion><groupId>{g}</groupId><artifactId>{a}</artifactId></exclusion>" for g, a in sorted(excluded)
    )
    deps = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version>"
        f"<exclusions>{exclusions}</exclusions></dependency>\n"
        for g, a, v in ROOTS
    )
    mgmt = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>\n"
        for (g, a), v in sorted(managed.items())
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>cartflow</groupId><artifactId>spark-jars</artifactId><version>0</version><packaging>pom</packaging>"
        f"<dependencyManagement><dependencies>{mgmt}</dependencies></dependencyManagement>"
        f"<dependencies>{deps}</dependencies></project>\n"
    )


def _mvn_resolve(workdir: Path, pom: str) -> list[tuple[str, str, str, Path]]:
    """(group, artifact, version, local file) of the runtime closure of ``pom``."""
    (workdir / "pom.xml").write_text(pom)
    out = workdir / "deps.txt"
    cmd = ["mvn", "-B", "-q", "-f", str(workdir / "pom.xml"), f"{_DEP_PLUGIN}:list", "-DincludeScope=runtime",
           "-DoutputAbsoluteArtifactFilename=true", f"-DoutputFile={out}"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # the code is reported below
    if proc.returncode != 0:
        raise SystemExit(f"mvn failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    resolved = []
    for line in out.read_text().splitlines():
        # maven-dependency-plugin 3.x appends " -- module <name>" to each entry.
        fields = line.split(" -- ", 1)[0].strip().split(":")
        if len(fields) == 6 and fields[2] == "jar":  # group:artifact:jar:version:scope:path
            resolved.append((fields[0], fields[1], fields[3], Path(fields[5])))
        elif len(fields) == 7 and fields[2] == "jar":
            raise SystemExit(f"classifier artifacts are not supported by the lock format: {line.strip()}")
    return resolved


def relock(lock: Path = LOCK_PATH) -> None:
    if shutil.which("mvn") is None:
        raise SystemExit("--relock needs Maven (`mvn`) on PATH")
    jars_dir = _pyspark_jars_dir()
    if (hadoop := _jar_version(jars_dir, "hadoop-client-api")) != HADOOP_VERSION:
        raise SystemExit(f"pyspark ships hadoop-client-api {hadoop}, lock pins hadoop-aws {HADOOP_VERSION}")
    jackson = _jar_version(jars_dir, "jackson-databind")
    excluded = set(ALWAYS_EXCLUDED)
    managed: dict[tuple[str, str], str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Iterate: excluding an artifact pyspark provides also drops its subtree, which can
        # change the closure; stop when nothing new is excluded or version-aligned.
        for _ in range(6):
            resolved = _mvn_resolve(Path(tmp), _pom(excluded, managed))
            provided = {(g, a) for g, a, _v, _p in resolved if _provided_by_pyspark(jars_dir, a)}
            # Jackson modules pyspark lacks must match its jackson-databind (module version checks).
            align = {(g, a): jackson for g, a, v, _p in resolved if g.startswith("com.fasterxml.jackson") and jackson
                     and (g, a) not in provided and v != jackson}  # fmt: skip
            if not provided - excluded and not align:
                break
            excluded |= provided
            managed |= align
        else:
            raise SystemExit("relock did not converge")
    kept = sorted(resolved)
    names = [p.name for *_x, p in kept]
    if len(set(names)) != len(names):
        raise SystemExit(f"two locked jars share a filename: {names}")
    header = [
        "# Spark runtime jars for cartflow, NOT shipped by pyspark: Delta Lake + S3A + AWS SDK v2 modules.",
        "# Produced by `python spark/fetch_jars.py --relock` (do not edit by hand):",
        "#   mvn maven-dependency-plugin:list on a generated pom with roots",
        *[f"#     {g}:{a}:{v}" for g, a, v in ROOTS],
        "#   excluding software.amazon.awssdk:bundle, org.wildfly.openssl:*, and every artifact",
        f"#   pyspark's jars/ already ships (hadoop-client-api {hadoop}, netty, jackson, parquet, ...).",
        "# Format: group:artifact:version  sha256  filename",
    ]
    body = [f"{g}:{a}:{v}  {sha256_of(p)}  {p.name}" for g, a, v, p in kept]
    lock.write_text("\n".join(header + body) + "\n")
    total = sum(p.stat().st_size for *_x, p in kept)
    print(f"wrote {lock}: {len(kept)} jars, {total / 1e6:.1f} MB")


# ----------------------------------------------------------------------------- CLI


def _default_dest() -> Path:
    # Only the no-`--dest` path needs cartflow (Docker builds pass --dest and stay stdlib-only).
    from cartflow.core.config import Settings

    return Settings().jars_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", type=Path, help="target directory (default: Settings().jars_dir)")
    parser.add_argument("--repo", default=MAVEN_CENTRAL, help="Maven repository base URL (https:// or file://)")
    parser.add_argument("--lock", type=Path, default=LOCK_PATH)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if any locked jar is missing or corrupt")
    mode.add_argument("--relock", action="store_true", help="re-resolve the lock with Maven (maintainers)")
    args = parser.parse_args(argv)

    if args.relock:
        relock(args.lock)
        return 0
    dest = args.dest or _default_dest()
    if args.check:
        bad = check(dest, args.lock)
        for jar in bad:
            print(f"missing or corrupt: {jar.coordinate} ({dest / jar.filename})", file=sys.stderr)
        if bad:
            print("run `python spark/fetch_jars.py` (or `make jars`)", file=sys.stderr)
        return 1 if bad else 0
    try:
        paths = fetch(dest, args.repo, args.lock, show_progress=True)
    except FetchError as exc:
        print(f"fetch_jars: {exc}", file=sys.stderr)
        return 1
    total = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} jars, {total / 1e6:.1f} MB in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
