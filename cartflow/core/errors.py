"""Infrastructure failures as one clear line, and the bounded retry every process shares.

A process that cannot reach its AWS endpoint, finds a table missing or is misconfigured
must say so in one line an operator can act on and exit non-zero, instead of printing a
botocore traceback or retrying forever. Used by the CLI (cartflow.cli) and the local
runners (cartflow.local.*). The exception classes live in the stdlib-only
cartflow.core.exceptions and the backoff in cartflow.core.retry (re-exported here).
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from pydantic import ValidationError
from pydantic_settings import SettingsError

from cartflow.core.config import ENDPOINT_EXAMPLE, ENDPOINT_VARIABLES
from cartflow.core.exceptions import CartflowError, InfraError
from cartflow.core.retry import Backoff, backoff_delays, retry  # noqa: F401  backoff_delays re-exported

log = logging.getLogger(__name__)
T = TypeVar("T")

APPLY_HINT = "run `cartflow resources apply`"
NO_ENDPOINT = f"real AWS (neither {' nor '.join(ENDPOINT_VARIABLES)} is set)"


class BadInput(CartflowError, ValueError):
    """The user gave something unusable (a missing folder, a refused target): exit code 2, not 1."""


def describe_target(endpoint: str | None) -> str:
    """Where requests go, for messages: the endpoint, or a plain statement that it is real AWS."""
    return endpoint or NO_ENDPOINT


# Error codes meaning "the resource is not there": retrying does not create it.
MISSING_CODES = frozenset(
    {
        "ResourceNotFoundException",
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NoSuchBucket",
        "StateMachineDoesNotExist",
        "ActivityDoesNotExist",
        "NotFound",  # SNS topic
    }
)
# Configuration/credential problems: also not fixed by waiting.
CONFIG_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "ExpiredTokenException",
    }
)
_UNREACHABLE = (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError, ReadTimeoutError, ConnectionError)
_TABLE_IN_MESSAGE = re.compile(r"Table: (?P<name>[A-Za-z0-9_.-]+) not found")


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError (``"ResourceNotFoundException"``), "" for anything else.

    Read from the ``response`` dict botocore attaches rather than by type, so stubs that
    carry one (tests) and every ClientError subclass answer the same way.
    """
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", "") or "")


def is_unreachable(exc: BaseException) -> bool:
    return isinstance(exc, _UNREACHABLE)


def is_fatal(exc: BaseException) -> bool:
    """True when waiting will not help: a missing resource, bad credentials, bad settings."""
    if isinstance(exc, InfraError | NoCredentialsError | ValidationError):
        return True
    return error_code(exc) in MISSING_CODES | CONFIG_CODES


def explain(exc: BaseException, endpoint: str | None = None) -> str | None:
    """One line for a known infrastructure failure, None for anything else (a real bug).

    A wrapper that hides the AWS error (boto3's S3UploadFailedError raised while handling a
    ClientError) is explained by the error it wraps.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        line = _explain_one(current, endpoint)
        if line is not None:
            return line
        current = current.__cause__ or current.__context__
    return None


def _explain_one(exc: BaseException, endpoint: str | None) -> str | None:
    where = describe_target(endpoint)
    if isinstance(exc, InfraError):
        return str(exc)
    if isinstance(exc, ValidationError):
        return invalid_settings_message(exc)
    if isinstance(exc, SettingsError):
        return f"invalid configuration: {exc}"
    if is_unreachable(exc):
        if endpoint is None:
            return (
                f"cannot reach the AWS endpoint of {where} ({type(exc).__name__}); for the local emulator set "
                f"CARTFLOW_AWS_ENDPOINT_URL={ENDPOINT_EXAMPLE} (`cartflow up` prints it)"
            )
        return f"cannot reach the AWS endpoint {where} ({type(exc).__name__}); is the emulator running (`cartflow up`)?"
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found (environment, profile or role); the emulator accepts test/test"
    code = error_code(exc)
    message = str(exc.response.get("Error", {}).get("Message", "")) if isinstance(exc, ClientError) else ""
    if code in MISSING_CODES:
        m = _TABLE_IN_MESSAGE.search(message)
        bucket = exc.response.get("Error", {}).get("BucketName") if isinstance(exc, ClientError) else None
        operation = getattr(exc, "operation_name", "") or ""
        fallback = f"{message or code} ({operation})" if operation else (message or code)
        what = f"table {m['name']}" if m else f"bucket {bucket}" if bucket else fallback
        return f"{what} not found at {where}: {APPLY_HINT}"
    if code in CONFIG_CODES:
        return f"AWS refused the credentials or permissions ({code}: {message})"
    return None


def invalid_settings_message(exc: ValidationError) -> str:
    """``CARTFLOW_BUCKET: invalid S3 bucket name 'X'; ...`` from a Settings ValidationError."""
    parts = []
    for err in exc.errors():
        field = "_".join(str(p) for p in err.get("loc", ())).upper()
        name = field if field in ENDPOINT_VARIABLES else f"CARTFLOW_{field}"  # an alias is already the variable
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{name}: {msg}")
    return "invalid configuration: " + "; ".join(parts)


def endpoint_reachable(endpoint: str, timeout: float = 2.0) -> bool:
    """TCP connect to the endpoint's host:port (works for any emulator, no health API needed)."""
    url = urlsplit(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------- preflight


@dataclass(frozen=True)
class Needs:
    """What a process needs to exist before it can do anything useful."""

    tables: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    activities: tuple[str, ...] = ()  # activity ARNs
    state_machines: tuple[str, ...] = ()  # state machine ARNs


def missing(clients: Any, needs: Needs) -> list[str]:
    """The needed resources that do not exist, as ``table X`` / ``queue Y`` / ... strings."""
    gone: list[str] = []
    checks: Iterable[tuple[str, str, Callable[[], Any]]] = [
        *(("table", t, lambda t=t: clients.dynamodb.describe_table(TableName=t)) for t in needs.tables),
        *(("queue", q, lambda q=q: clients.sqs.get_queue_url(QueueName=q)) for q in needs.queues),
        *(("activity", a, lambda a=a: clients.sfn.describe_activity(activityArn=a)) for a in needs.activities),
        *(("state machine", s, lambda s=s: clients.sfn.describe_state_machine(stateMachineArn=s)) for s in needs.state_machines),
    ]
    for kind, name, call in checks:
        try:
            call()
        except ClientError as exc:
            if error_code(exc) not in MISSING_CODES:
                raise
            gone.append(f"{kind} {name}")
    return gone


def check_ready(endpoint: str | None, clients: Any, needs: Needs) -> None:
    """Raise InfraError (one line) unless the endpoint answers and every needed resource exists."""
    if endpoint and not endpoint_reachable(endpoint):
        raise InfraError(f"cannot reach the AWS endpoint {endpoint}; is the emulator running (`cartflow up`)?")
    try:
        gone = missing(clients, needs)
    except Exception as exc:
        line = explain(exc, endpoint)
        if line is None:
            raise
        raise InfraError(line) from exc
    if gone:
        raise InfraError(f"{', '.join(gone)} not found at {describe_target(endpoint)}: {APPLY_HINT}")


def retry_bounded(
    fn: Callable[[], T],
    *,
    attempts: int = 6,
    base_s: float = 0.5,
    max_s: float = 8.0,
    jitter: float = 0.0,
    retry_if: Callable[[BaseException], bool] = lambda exc: True,
    sleep: Callable[[float], Any] = time.sleep,
    what: str = "call",
) -> T:
    """``fn()`` with up to ``attempts`` tries and exponential backoff; the last error propagates.

    Used at process start: an emulator that comes up a few seconds late is waited for, one
    that never does ends the process (0.5+1+2+4+8 = 15.5 s at most with the defaults).
    ``jitter`` is cartflow.core.retry's: 0 waits exactly that schedule; processes pass
    DEFAULT_JITTER so the ones started together do not retry in lockstep.
    """

    def log_retry(exc: BaseException, n: int, delay: float) -> None:
        log.warning("%s failed (%s); retry %d/%d in %.1fs", what, explain(exc) or exc, n, attempts - 1, delay)

    return retry(
        fn, attempts=attempts, backoff=Backoff(base_s, max_s, jitter), retry_if=retry_if, on_retry=log_retry, sleep=sleep
    )
