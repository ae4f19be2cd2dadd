"""The project's exception hierarchy: every error cartflow raises on purpose is a CartflowError.

Stdlib only, because the state-machine renderer (imported by the emulator's init hook) and
the jar fetcher (run in a bare image build stage) subclass it too. A subclass keeps the
builtin base its callers catch it by (``class ContractError(CartflowError, ValueError)``),
so ``except CartflowError`` can sit above them without changing what anything else catches.
"""

from __future__ import annotations


class CartflowError(Exception):
    """A failure cartflow raised on purpose; ``str()`` is a message for people, not a traceback."""


class InfraError(CartflowError, RuntimeError):
    """A failure the process cannot work around; ``str()`` is the one-line message."""
