"""ready.d hook: apply cartflow's resource spec once the emulator is up.

Run by MiniStack (or LocalStack) with the emulator's own Python, which has botocore and
PyYAML but not cartflow's dependencies, so the two stdlib-level modules it needs are
loaded from the mounted source (docker-compose.yml mounts them under /opt/cartflow).
Values come from the spec's defaults overridden by CARTFLOW_* environment variables,
exactly like cartflow.config.Settings.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path
from types import ModuleType

SRC = Path(os.environ.get("CARTFLOW_INIT_SRC", "/opt/cartflow"))


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cartflow init: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    apply = _load("cartflow_init_apply", SRC / "resources" / "apply.py")
    render = _load("cartflow_init_render", SRC / "orchestrator" / "render.py")
    values = apply.values_from_env(os.environ, apply.load_spec(SRC / "resources" / "spec.yaml"))
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    clients = apply.botocore_client_factory(endpoint, values["region"])
    summary = apply.apply_spec(values, clients, render.render_state_machine, apply.load_spec(SRC / "resources" / "spec.yaml"))
    for name, ref in summary.items():
        print(f"cartflow init: {name} -> {ref}")


if __name__ == "__main__":
    main()
