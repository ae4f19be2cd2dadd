"""spark.jobs.class_archive: which Spark settings map the driver's class archive."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cartflow.core.config import Settings
from spark.jobs import class_archive


@pytest.fixture
def jars(tmp_path: Path) -> list[Path]:
    out = []
    for name in ("delta-spark.jar", "hadoop-aws.jar"):
        path = tmp_path / "jars" / name
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"PK")
        out.append(path)
    return out


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(jars_dir=tmp_path / "jars", spark_master="local[2]")


def test_no_archive_no_change(settings: Settings, jars: list[Path]) -> None:
    assert class_archive.archive_conf(settings, jars) == {}


def test_a_matching_archive_moves_the_jars_onto_the_class_path(settings: Settings, jars: list[Path]) -> None:
    path = class_archive.archive_path(settings, jars)
    if path is None:
        pytest.skip("no java on this machine")  # the project's CI installs one
    path.write_bytes(b"archive")
    conf = class_archive.archive_conf(settings, jars)
    assert conf["spark.jars"] == ""
    assert conf["spark.driver.extraClassPath"] == os.pathsep.join(map(str, jars))
    assert f"-XX:SharedArchiveFile={path}" in conf["spark.driver.extraJavaOptions"]


def test_not_for_a_cluster_and_not_when_turned_off(settings: Settings, jars: list[Path]) -> None:
    path = class_archive.archive_path(settings, jars)
    if path is None:
        pytest.skip("no java on this machine")
    path.write_bytes(b"archive")
    assert class_archive.archive_conf(settings.model_copy(update={"spark_master": "spark://master:7077"}), jars) == {}
    assert class_archive.archive_conf(settings.model_copy(update={"spark_class_archive": False}), jars) == {}


def test_a_changed_jar_means_another_archive(settings: Settings, jars: list[Path]) -> None:
    before = class_archive.archive_path(settings, jars)
    if before is None:
        pytest.skip("no java on this machine")
    jars[0].write_bytes(b"PK-other-version")
    assert class_archive.archive_path(settings, jars) != before
