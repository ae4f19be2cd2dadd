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
