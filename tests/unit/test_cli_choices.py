"""The CLI's enums agree with their sources of truth; every command's help renders; the
settings parse what users type (endpoint URLs, comma-separated lists)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from cartflow.cli import app
from cartflow.cli.choices import Component, Fidelity, Image, Principal, Shape, Target
from cartflow.core.config import Settings
from cartflow.core.errors import BadInput, explain


def test_enums_match_their_sources() -> None:
    from typing import get_args

    from cartflow.core.models import DataType
    from cartflow.infra.iam import PRINCIPALS
    from cartflow.infra.images import IMAGES
    from cartflow.local.fixturegen import Shape as GenShape
    from cartflow.local.stack import COMPONENTS, FIDELITIES
    from orchestrator.render import TARGETS
    from spark.jobs.contracts import load_contracts

    assert [s.value for s in Shape] == list(get_args(GenShape))
    assert [t.value for t in Target] == list(TARGETS)
    assert [c.value for c in Component] == list(COMPONENTS)
    assert [f.value for f in Fidelity] == list(FIDELITIES)
    assert [p.value for p in Principal] == list(PRINCIPALS)
    assert [i.value for i in Image] == list(IMAGES)
    assert sorted(d.value for d in DataType) == sorted(load_contracts())  # contracts check --dataset


def _command_paths() -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = [()]
    paths += [(c.name or "",) for c in app.registered_commands]
    for group in app.registered_groups:
        assert group.typer_instance is not None
        paths += [(group.name or "", c.name or "") for c in group.typer_instance.registered_commands]
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "cartflow")
def test_every_help_renders(path: tuple[str, ...]) -> None:
    res = CliRunner().invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    assert "--no-no-" not in res.output


def test_endpoint_comes_from_either_variable_cartflow_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARTFLOW_AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://10.0.0.1:4566")
    assert Settings().aws_endpoint_url == "http://10.0.0.1:4566"
    monkeypatch.setenv("CARTFLOW_AWS_ENDPOINT_URL", "http://127.0.0.1:4567")
    assert Settings().aws_endpoint_url == "http://127.0.0.1:4567"
    monkeypatch.delenv("CARTFLOW_AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")
    assert Settings().aws_endpoint_url is None  # empty = not set: real AWS
    assert Settings(aws_endpoint_url="https://emu.example:8443").aws_endpoint_url == "https://emu.example:8443"


@pytest.mark.parametrize("bad", ["localhost:4566", "127.0.0.1", "ftp://host:21", "http://", "http://h:notaport"])
def test_a_bad_endpoint_is_one_line_naming_the_variable_and_an_example(bad: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("CARTFLOW_AWS_ENDPOINT_URL", bad)
    with pytest.raises(ValidationError) as info:
        Settings()
    line = explain(info.value)
    assert line == (
        f"invalid configuration: CARTFLOW_AWS_ENDPOINT_URL: not an endpoint URL: {bad!r}; "
        "expected scheme://host:port, e.g. http://127.0.0.1:4566"
    )


def test_subnet_lists_parse_as_json_or_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARTFLOW_ECS_SUBNETS", "subnet-1, subnet-2")
    monkeypatch.setenv("CARTFLOW_ECS_SECURITY_GROUPS", '["sg-1"]')
    s = Settings()
    assert (s.ecs_subnets, s.ecs_security_groups) == (["subnet-1", "subnet-2"], ["sg-1"])
    monkeypatch.setenv("CARTFLOW_ECS_SUBNETS", "subnet-123")
    assert Settings().ecs_subnets == ["subnet-123"]
    monkeypatch.setenv("CARTFLOW_ECS_SUBNETS", "[subnet-1")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "CARTFLOW_ECS_SUBNETS: not a JSON list" in (explain(info.value) or "")


def test_guard_exit_codes_usage_2_failure_1() -> None:
    from cartflow.cli.guard import exit_code
    from cartflow.core.exceptions import InfraError

    with pytest.raises(ValidationError) as info:
        Settings(bucket="Bad_Bucket")
    assert exit_code(info.value) == 2
    assert exit_code(BadInput("x")) == 2
    assert exit_code(InfraError("x")) == 1


def test_seed_folder_problems_are_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cartflow.ops.views import seed_files

    (tmp_path / "orders").mkdir()
    (tmp_path / "orders" / "a.csv").write_text("order_id\n1\n")
    (tmp_path / "orders" / "notes.txt").write_text("ignored")
    assert [k for _, k in seed_files(tmp_path)] == ["raw/orders/a.csv"]
    (tmp_path / "stray.csv").write_text("x\n")
    with pytest.raises(BadInput, match="1 CSV file"):
        seed_files(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="no CSV files"):
        seed_files(tmp_path / "empty")


def test_generate_writes_the_asked_parts_per_dataset(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "gen"
    done = CliRunner().invoke(app, ["generate", "--shape", "tables", "--rows", "200", "--files", "2", "--out", str(out)])
    assert done.exit_code == 0, done.output
    for dataset in ("orders", "order_items"):  # products: one reference file
        parts = sorted((out / dataset).glob("*.csv"))
        assert len(parts) == 2, (dataset, parts)
    body = [line for p in sorted((out / "order_items").glob("*.csv")) for line in p.read_text().splitlines()[1:]]
    assert len(body) == 200  # the rows are split between the parts, not repeated
