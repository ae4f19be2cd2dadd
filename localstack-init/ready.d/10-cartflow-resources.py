"""ready.d hook: apply cartflow's resource spec once the emulator is up.

Run by MiniStack (or LocalStack) with the emulator's own Python, which has botocore and
PyYAML but not cartflow's other dependencies. docker-compose.yml mounts the source under
/opt/cartflow (CARTFLOW_INIT_SRC), which goes on sys.path; the hook then imports the
stdlib-level modules it needs like any other code: the typed spec (cartflow.core.spec) and
its applier (cartflow.infra.apply), which renders the state machine with orchestrator.render.
Values come from the spec's defaults overridden by CARTFLOW_* environment variables,
exactly like cartflow.core.config.Settings.
"""

from __future__ import annotations

import logging
import os
import sys

sys.path.insert(0, os.environ.get("CARTFLOW_INIT_SRC", "/opt/cartflow"))

from cartflow.core.spec import load, load_spec, values_from_env
from cartflow.infra.apply import apply_spec, botocore_client_factory


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s")
    raw = load_spec()
    values = values_from_env(os.environ, raw)
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "http://127.0.0.1:4566")
    clients = botocore_client_factory(endpoint, values["region"])
    summary = apply_spec(values, clients, load(values, raw))
    for name, ref in summary.items():
        print(f"cartflow init: {name} -> {ref}")


if __name__ == "__main__":
    main()
