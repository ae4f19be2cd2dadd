"""`cartflow up --fidelity aws`: what it refuses, and the one-line errors a machine without its
prerequisites gets (no traceback, nothing left running)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cartflow.cli import app
from cartflow.local import registry


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--fidelity", "aws", "--only", "ingest"], "--only picks embedded components"),
        (["--fidelity", "aws", "--persist"], "--persist is for the embedded stack"),
        (["--registry", "127.0.0.1:5000"], "--registry is for --fidelity aws"),
        (["--fidelity", "gcp"], "'gcp' is not one of"),
    ],
)
def test_up_refuses_options_of_the_other_fidelity(argv: list[str], says: str) -> None:
    result = CliRunner().invoke(app, ["up", *argv])
    assert result.exit_code == 2
    assert says in " ".join(result.output.split())


def test_without_docker_the_aws_fidelity_says_so_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker client on it
    monkeypatch.setenv("CARTFLOW_STATE_DIR", str(tmp_path / "state"))
    result = CliRunner().invoke(app, ["up", "--fidelity", "aws"])
    assert result.exit_code == 1
    out = " ".join(result.output.split())
    assert "Docker is not reachable through `docker`" in out and "Traceback" not in out
    assert not (tmp_path / "state" / "stacks").exists() or not any((tmp_path / "state" / "stacks").rglob("stack.json"))


def test_a_missing_registry_binary_names_the_package_and_the_alternative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "REGISTRY_BIN", "cartflow-no-such-registry")
    with pytest.raises(registry.RegistryError, match=r"apt-get install docker-registry.*--registry HOST"):
        registry.registry_binary()


@pytest.mark.parametrize(
    ("inspect", "gateway"),
    [
        ("172.17.0.1 172.17.0.0/16", "172.17.0.1"),
        (" 172.18.0.0/16", "172.18.0.1"),  # a fresh engine reports only the subnet
        (" fd00::/64 172.19.0.0/16", "172.19.0.1"),
    ],
)
def test_the_bridge_address_comes_from_the_gateway_or_else_the_subnet(inspect: str, gateway: str, tmp_path: Path) -> None:
    from cartflow.local.emulator import docker_gateway

    fake = tmp_path / "docker"  # a stand-in client printing what `network inspect` would
    fake.write_text(f"#!/bin/sh\necho '{inspect}'\n")
    fake.chmod(0o755)
    assert docker_gateway(str(fake)) == gateway
