"""A stand-in for the Lambda runtime's context object, and a function to invoke with it.

There is no Lambda runtime locally, so the event-source runners build one context per
invocation the way Lambda does: a fresh ``aws_request_id`` each time and a deadline that
``get_remaining_time_in_millis()`` counts down to. That is what aws-lambda-powertools reads
(Logger's ``inject_lambda_context``, idempotency's in-progress expiry, batch utilities).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cartflow.core.config import Settings

log = logging.getLogger(__name__)

# Signature of every cartflow function: the same object AWS Lambda calls.
Handler = Callable[[dict[str, Any], Any], Any]


class LocalLambdaContext:
    """Duck-typed ``LambdaContext``: the attributes and method Lambda's Python runtime exposes."""

    def __init__(
        self,
        *,
        function_name: str,
        invoked_function_arn: str,
        timeout_s: float,
        memory_limit_in_mb: int,
        function_version: str = "$LATEST",
        log_stream_name: str = "",
    ) -> None:
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = invoked_function_arn
        self.memory_limit_in_mb = memory_limit_in_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream_name
        # Lambda's context has these as None unless the invoker supplied them.
        self.identity: Any = None
        self.client_context: Any = None
        self.tenant_id: str | None = None
        # Monotonic so a wall-clock jump cannot make the remaining time negative or huge.
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    def __repr__(self) -> str:
        return f"LocalLambdaContext({self.function_name!r}, request_id={self.aws_request_id!r})"


@dataclass
class LocalFunction:
    """A handler plus the configuration Lambda would give it (name, timeout, memory).

    ``invoke`` is the only place the runners call handlers, so each call gets a fresh
    context and a log line with its request id and duration.
    """

    name: str
    handler: Handler
    settings: Settings
    timeout_s: float = 60.0
    memory_limit_in_mb: int = 512
    version: str = "$LATEST"
    # One "container" per runner process: Lambda's log stream names a sandbox, not a call.
    _log_stream: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        today = datetime.now(UTC).strftime("%Y/%m/%d")
        self._log_stream = f"{today}/[{self.version}]{uuid.uuid4().hex}"

    @property
    def arn(self) -> str:
        return self.settings.arn("lambda", f"function:{self.name}")

    def new_context(self) -> LocalLambdaContext:
        return LocalLambdaContext(
            function_name=self.name,
            function_version=self.version,
            invoked_function_arn=self.arn,
            timeout_s=self.timeout_s,
            memory_limit_in_mb=self.memory_limit_in_mb,
            log_stream_name=self._log_stream,
        )

    def invoke(self, event: Mapping[str, Any]) -> Any:
        """Call the handler; exceptions propagate so each source applies its own retry rules."""
        context = self.new_context()
        started = time.monotonic()
        try:
            return self.handler(dict(event), context)
        finally:
            elapsed = time.monotonic() - started
            log.debug("invoked %s request_id=%s in %.3fs", self.name, context.aws_request_id, elapsed)
            if elapsed > self.timeout_s:
                # Locally nothing kills the handler; on AWS this invocation would have timed out.
                log.warning(
                    "%s took %.1fs, over its %.1fs timeout (Lambda would have killed it)",
                    self.name,
                    elapsed,
                    self.timeout_s,
                )
