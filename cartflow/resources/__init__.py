"""The resource spec and its applier (see spec.yaml, apply.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cartflow.aws import AwsClients
    from cartflow.config import Settings


def apply_resources(settings: "Settings", clients: "AwsClients") -> dict[str, str]:
    """Apply the spec with cartflow's own settings and boto3 clients (embedded mode, tests, CLI)."""
    from cartflow.orchestrator.render import render_state_machine
    from cartflow.resources.apply import apply_spec

    return apply_spec(settings.spec_values(), clients.client, render_state_machine)
