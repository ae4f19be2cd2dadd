"""The class-data-sharing (AppCDS) archive of a local-mode Spark driver.

A fresh JVM spends seconds loading, parsing and verifying the classes Spark, Delta, Hadoop
and the AWS SDK need for a first batch. ``python -m cartflow.local.spark_class_archive``
(run by ``make jars`` and the CLI's jar check) dumps the classes one warm-up batch loaded
(``-XX:ArchiveClassesAtExit``); later local-mode sessions map that archive instead of
loading those classes again (docs/benchmarks.md).

An archive only fits the JVM and the class path it was dumped with, so its file name
carries a digest of both: with no matching file a session starts exactly as before, and
a changed jar or JDK just means a new archive. Local mode only: there the driver runs every
task, so its own class path can hold every jar (``spark.driver.extraClassPath`` instead of
``spark.jars``: CDS archives classes of the JVM's class path, not of Spark's loaders).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from cartflow.core.config import Settings

PREFIX = "driver-classes-"
# Mismatch or corruption just disables the archive (-Xshare:auto, the default); say nothing.
_QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def java_binary() -> Path | None:
    """The java PySpark launches: $JAVA_HOME/bin/java, else the first on PATH."""
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(found).resolve() if found and Path(found).exists() else None


def _spark_jars() -> list[Path]:
    import pyspark

    return sorted((Path(pyspark.__file__).parent / "jars").glob("*.jar"))


def archive_path(settings: Settings, jars: list[Path]) -> Path | None:
    """Where the archive for this JVM and class path lives (None: no java found)."""
    java = java_binary()
    if java is None:
        return None
    digest = hashlib.sha256()
    for path in [java, *_spark_jars(), *jars]:
        st = path.stat()
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return settings.jars_dir / f"{PREFIX}{digest.hexdigest()[:20]}.jsa"


def is_local(settings: Settings) -> bool:
    return settings.spark_master.startswith("local")


def classpath_conf(jars: list[Path]) -> dict[str, str]:
    """The jars on the driver's own class path (what an archive can hold)."""
    return {"spark.jars": "", "spark.driver.extraClassPath": os.pathsep.join(str(p) for p in jars)}


def archive_conf(settings: Settings, jars: list[Path], java_options: str = "") -> dict[str, str]:
    """Spark settings that map the matching archive (the driver's ``java_options`` kept);
    {} when there is none or not local mode."""
    if not (is_local(settings) and settings.spark_class_archive):
        return {}
    path = archive_path(settings, jars)
    if path is None or not path.is_file():
        return {}
    options = f"{java_options} -XX:SharedArchiveFile={path} {_QUIET}".strip()
    return classpath_conf(jars) | {"spark.driver.extraJavaOptions": options}


def dump_conf(jars: list[Path], target: Path, java_options: str = "") -> dict[str, str]:
    """Spark settings of the JVM that writes an archive to ``target`` when it exits."""
    options = f"{java_options} -XX:ArchiveClassesAtExit={target} {_QUIET}".strip()
    return classpath_conf(jars) | {"spark.driver.extraJavaOptions": options}
