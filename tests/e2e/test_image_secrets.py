"""The built images carry no secrets: not in their environment, labels or any layer's command,
and they run as a non-root user (what `docker image inspect` / `docker history` show)."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from cartflow.infra import images
from tests.unit.test_security import findings

pytestmark = pytest.mark.e2e
TAG = "secrets-e2e"
# Names that hold a secret when they hold anything but the emulator's dummy value.
SECRET_NAME = re.compile(r"(?i)(secret|password|passwd|token|private_key|access_key|api_key|credential)")
ALLOWED_VALUES = {"", "test"}


@pytest.fixture(scope="module")
def built(docker_engine: str, base_images: None) -> list[str]:
    return [f"{b.repository}:{TAG}" for b in images.build_images(tags=[TAG])]


def docker(engine: str, *args: str) -> str:
    res = subprocess.run([engine, *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def env_problems(ref: str, env: list[str]) -> list[str]:
    out = []
    for entry in env:
        name, _, value = entry.partition("=")
        if SECRET_NAME.search(name) and value not in ALLOWED_VALUES:
            out.append(f"{ref}: ENV {name} has a value")
        out += findings(f"{ref} ENV {name}", entry)
    return out


def test_no_secret_in_image_env_labels_or_layer_history(docker_engine: str, built: list[str]) -> None:
    problems: list[str] = []
    for ref in built:
        [info] = json.loads(docker(docker_engine, "image", "inspect", ref))
        config: dict[str, Any] = info["Config"]
        problems += env_problems(ref, config.get("Env") or [])
        for key, value in (config.get("Labels") or {}).items():
            problems += findings(f"{ref} LABEL {key}", f"{key}={value}")
        user = config.get("User") or ""
        assert user and user.split(":")[0] not in ("root", "0"), f"{ref} runs as {user or 'root'}"
        for i, line in enumerate(docker(docker_engine, "history", "--no-trunc", "--format", "{{.CreatedBy}}", ref).splitlines()):
            problems += findings(f"{ref} layer {i}", line)
            if re.search(r"(?i)--build-arg\s+\S*(secret|token|password)", line):
                problems.append(f"{ref} layer {i}: build arg that looks like a secret")
    assert not problems, "\n".join(problems)


def test_env_checker_flags_a_secret_value() -> None:
    assert env_problems("x", ["AWS_SECRET_ACCESS_KEY=" + "abc123"])
    assert env_problems("x", ["SOME_VAR=" + "AKIA" + "ABCDEFGHIJKLMNOP"])
    assert not env_problems("x", ["PATH=/opt/venv/bin:/usr/bin", "CARTFLOW_STATE_DIR=/var/lib/cartflow/state"])
