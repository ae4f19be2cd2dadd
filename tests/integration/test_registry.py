"""The throwaway image registry `cartflow up --fidelity aws` pushes to: Debian's docker-registry,
started on a free 127.0.0.1 port, answering the registry API, gone after stop."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from cartflow.local.registry import RegistryError, registry_binary, start_registry
from tests.conftest import require

pytestmark = pytest.mark.integration


def test_the_registry_serves_the_v2_api_and_stops(tmp_path: Path) -> None:
    try:
        registry_binary()
    except RegistryError as exc:
        require(False, str(exc))
    reg = start_registry(tmp_path / "registry", tmp_path / "logs" / "registry.log")
    try:
        with urllib.request.urlopen(f"http://{reg.address}/v2/_catalog", timeout=5) as resp:
            assert json.load(resp) == {"repositories": []}
        assert (tmp_path / "registry" / "registry.yml").exists()
    finally:
        reg.stop()
    assert reg.process.poll() is not None and not reg.answers()
