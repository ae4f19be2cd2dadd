"""The enumerated values of the CLI's options and arguments, as enums (typer lists and
completes them, and rejects anything else with a one-line usage error).

Each mirrors one source of truth elsewhere; tests/unit/test_cli_choices.py checks they agree.
They are spelled out here (not built from those tuples) so that type checkers know them and
`cartflow --help` does not import boto3, pyspark or the contracts to print them.
"""

from __future__ import annotations

from enum import StrEnum


class Shape(StrEnum):
    """cartflow.local.fixturegen.Shape"""

    TABLES = "tables"
    ORDER_LINES = "order_lines"


class Target(StrEnum):
    """orchestrator.render.TARGETS"""

    LOCAL = "local"
    AWS = "aws"


class Fidelity(StrEnum):
    """cartflow.local.stack.FIDELITIES: what `cartflow up` runs."""

    EMBEDDED = "embedded"
    AWS = "aws"


class Component(StrEnum):
    """cartflow.local.stack.COMPONENTS: what `cartflow serve` runs."""

    INGEST = "ingest"
    STREAM_TRIGGER = "stream-trigger"
    DEBOUNCER = "debouncer"
    CONTROLLER = "controller"
    SPARK_RUNNER = "spark-runner"


class Principal(StrEnum):
    """cartflow.infra.iam.PRINCIPALS"""

    INGEST = "ingest"
    DEBOUNCER = "debouncer"
    STREAM_TRIGGER = "stream-trigger"
    CONTROLLER = "controller"
    STATE_MACHINE = "state-machine"
    SPARK_JOB = "spark-job"


class Image(StrEnum):
    """cartflow.infra.images.IMAGES"""

    SERVICES = "services"
    SPARK = "spark"
