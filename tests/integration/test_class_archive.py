"""The driver's class archive with a real JVM: a local session maps it (its classes come from
the archive, not the jars), and a broken archive is ignored, not fatal."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cartflow.core.config import Settings
from cartflow.local.spark_class_archive import build
from spark.jobs.class_archive import archive_path
from spark.jobs.session import locked_jars

pytestmark = pytest.mark.integration

# A child process: static JVM options only apply to a process's first session.
_SESSION = textwrap.dedent(
    """
    from cartflow.core.config import get_settings
    from spark.jobs.session import build_spark
    spark = build_spark(get_settings().model_copy(update={"spark_master": "local[1]"}), "class-archive-test")
    spark.sql("SELECT 1 AS one").write.format("delta").save(__import__("sys").argv[1])
    print(spark.read.format("delta").load(__import__("sys").argv[1]).count())
    """
)


def _session(jars_dir: Path, table: Path, class_log: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **__import__("os").environ,
        "CARTFLOW_JARS_DIR": str(jars_dir),
        # Added to the JVM's own options: every class load and where it came from.
        "JAVA_TOOL_OPTIONS": f"-Xlog:class+load=info:file={class_log}",
    }
    return subprocess.run([sys.executable, "-c", _SESSION, str(table)], env=env, capture_output=True, text=True, timeout=300)


def _linked_jars(base: Settings, tmp_path: Path) -> Settings:
    """A jars dir of our own (links to the real jars), so the test's archive is its own."""
    jars_dir = tmp_path / "jars"
    jars_dir.mkdir()
    for jar in locked_jars(base.jars_dir):
        (jars_dir / jar.name).symlink_to(jar)
    return base.model_copy(update={"jars_dir": jars_dir})


def test_a_local_session_maps_the_archive(tmp_path: Path) -> None:
    settings = Settings()  # the archive `make jars` built (built here if it did not)
    target = build(settings)
    assert target is not None and target.is_file()
    assert target == archive_path(settings, locked_jars(settings.jars_dir))
    log = tmp_path / "classes.log"
    done = _session(settings.jars_dir, tmp_path / "t", log)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "1"
    delta = [line for line in log.read_text().splitlines() if " io.delta." in line or " org.apache.spark.sql.delta." in line]
    assert delta, "no Delta class was loaded"
    # "(top)": the dynamic archive on top of the JDK's own; a jar would be named instead.
    assert any("shared objects file (top)" in line for line in delta), delta[:3]


def test_a_broken_archive_is_ignored(tmp_path: Path) -> None:
    settings = _linked_jars(Settings(), tmp_path)
    target = archive_path(settings, locked_jars(settings.jars_dir))
    assert target is not None
    target.write_bytes(b"not an archive" * 1000)
    log = tmp_path / "classes.log"
    done = _session(settings.jars_dir, tmp_path / "t", log)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "1"
    assert "shared objects file (top)" not in log.read_text()
