"""`cartflow doctor`: each check over injected facts (no java, docker or network needed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from cartflow.cli import doctor
from cartflow.cli.doctor import FAIL, OK, WARN, Facts, java_major, run_checks

GIB = 1024**3


def healthy(**changes: object) -> Facts:
    facts = Facts(
        java_version_output='openjdk version "17.0.15" 2025-04-15\nOpenJDK Runtime Environment\n',
        docker_engine="24.0.7",
        docker_error=None,
        compose="docker compose 2.24.0",
        port=4566,
        port_free=True,
        port_owner=None,
        endpoint=None,
        endpoint_healthy=None,
        jars_dir=Path("jars"),
        jars_missing=[],
        jars_total=44,
        credentials=True,
        state_dir=Path("state"),
        free_bytes=10 * GIB,
    )
    return replace(facts, **changes)  # type: ignore[arg-type]


def by_name(facts: Facts) -> dict[str, doctor.Check]:
    return {c.name: c for c in run_checks(facts)}


def test_a_healthy_machine_passes_every_check() -> None:
    checks = run_checks(healthy())
    assert [c.status for c in checks] == [OK] * len(checks)
    assert {c.name for c in checks} == {"java", "docker", "compose", "port", "endpoint", "jars", "credentials", "disk"}


@pytest.mark.parametrize(
    ("output", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "21" 2023-09-19', 21),
        ("garbage", None),
        (None, None),
    ],
)
def test_java_major(output: str | None, major: int | None) -> None:
    assert java_major(output) == major


@pytest.mark.parametrize("output", [None, 'openjdk version "21.0.2" 2024-01-16', 'java version "1.8.0_392"'])
def test_java_missing_or_another_version_fails_with_the_install_command(output: str | None) -> None:
    check = by_name(healthy(java_version_output=output))["java"]
    assert check.status == FAIL
    assert check.fix is not None and "openjdk-17" in check.fix


def test_docker_and_compose_are_optional_warnings() -> None:
    checks = by_name(healthy(docker_engine=None, docker_error="Cannot connect to the Docker daemon", compose=None))
    assert checks["docker"].status == WARN and "Cannot connect" in checks["docker"].detail
    assert checks["compose"].status == WARN
    assert checks["docker"].fix and checks["compose"].fix
    assert all(c.status == OK for name, c in checks.items() if name not in ("docker", "compose"))


def test_port_taken_by_a_stranger_fails_but_by_our_stack_is_fine() -> None:
    stranger = by_name(healthy(port_free=False))["port"]
    assert stranger.status == FAIL and stranger.fix is not None and "CARTFLOW_EMULATOR_PORT" in stranger.fix
    ours = by_name(healthy(port_free=False, port_owner="cartflow stack (pid 12)"))["port"]
    assert ours.status == OK and "pid 12" in ours.detail


def test_endpoint_set_but_down_fails_with_the_start_command() -> None:
    down = by_name(healthy(endpoint="http://127.0.0.1:4566", endpoint_healthy=False))["endpoint"]
    assert down.status == FAIL and down.fix is not None and "cartflow up --detach" in down.fix
    assert by_name(healthy(endpoint="http://127.0.0.1:4566", endpoint_healthy=True))["endpoint"].status == OK


def test_jars_not_matching_the_lock_fail_with_cartflow_jars() -> None:
    check = by_name(healthy(jars_missing=["delta-spark_2.12-3.2.0.jar", "x.jar"]))["jars"]
    assert check.status == FAIL and check.fix == "cartflow jars"
    assert "2 of 44" in check.detail and "delta-spark" in check.detail


def test_credentials_are_required_for_aws_only() -> None:
    aws = by_name(healthy(credentials=False))["credentials"]
    assert aws.status == FAIL and aws.fix is not None and "aws configure" in aws.fix
    emulator = by_name(healthy(credentials=False, endpoint="http://127.0.0.1:4566", endpoint_healthy=True))["credentials"]
    assert emulator.status == OK


def test_disk_needs_more_than_two_gib() -> None:
    low = by_name(healthy(free_bytes=GIB))["disk"]
    assert low.status == FAIL and low.fix is not None and "CARTFLOW_STATE_DIR" in low.fix
    assert by_name(healthy(free_bytes=3 * GIB))["disk"].status == OK


def test_gather_reads_this_machine(tmp_path: Path) -> None:
    """The facts come from the real machine: a private state dir, a port nobody uses, jars absent."""
    from cartflow.core.config import Settings
    from cartflow.local.emulator import free_port

    port = free_port()
    facts = doctor.gather(Settings(state_dir=tmp_path / "state", jars_dir=tmp_path / "jars", emulator_port=port))
    assert facts.port == port and facts.port_free
    assert facts.jars_total > 0 and len(facts.jars_missing) == facts.jars_total  # an empty jars dir
    assert facts.free_bytes > 0
    assert by_name(facts)["jars"].status == FAIL
