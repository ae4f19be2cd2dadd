"""Infrastructure from the one resource spec (cartflow/core/spec.yaml): the emulator applier
(``apply``), least-privilege IAM (``iam``), the CloudFormation renderer (``cloudformation``),
the functions' and jobs' environment (``environment``), images (``images``) and
``cartflow deploy`` (``ship``). Importing this package pulls in nothing beyond the stdlib:
the emulator's ready.d hook imports ``cartflow.infra.apply`` with the emulator's Python."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cartflow.core.aws import AwsClients
    from cartflow.core.config import Settings


def apply_resources(settings: Settings, clients: AwsClients) -> dict[str, str]:
    """Apply the spec with cartflow's own settings and boto3 clients (embedded mode, tests, CLI)."""
    from cartflow.infra.apply import apply_spec

    return apply_spec(settings.spec_values(), clients.client)
