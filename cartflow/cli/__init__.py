"""The ``cartflow`` command line (entry point ``cartflow.cli:app``)."""

from cartflow.cli.main import app

__all__ = ["app"]
