"""The ``cartflow`` command line (entry point ``cartflow.cli:app``)."""

from cartflow.cli.app import app

__all__ = ["app"]
