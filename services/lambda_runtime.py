"""A minimal AWS Lambda Runtime API client, so the services image runs as a Lambda function.

AWS runs ``cartflow-services`` as a container-image function with
``ImageConfig.EntryPoint = ["python", "-m", "services.lambda_runtime"]`` and
``ImageConfig.Command = ["services.ingest.handler"]`` (one function per handler;
see cartflow/infra/cloudformation.py). The same image keeps running the local runners unchanged.

Why not ``awslambdaric``: it is a compiled package the image would carry for one loop of
HTTP calls; the Runtime API is three endpoints
(https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html), stdlib is enough.

This module reads Lambda's *runtime* variables (``AWS_LAMBDA_RUNTIME_API``,
``AWS_LAMBDA_FUNCTION_*``), which are the platform's plumbing, not cartflow settings:
cartflow's own configuration still comes only from ``cartflow.core.config.Settings``.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

API_VERSION = "2018-06-01"
Handler = Callable[[dict[str, Any], Any], Any]


class RuntimeContext:
    """The context object Lambda's Python runtime passes (what aws-lambda-powertools reads)."""

    def __init__(self, headers: Mapping[str, str], environ: Mapping[str, str]) -> None:
        self.aws_request_id = headers["Lambda-Runtime-Aws-Request-Id"]
        self.invoked_function_arn = headers.get("Lambda-Runtime-Invoked-Function-Arn", "")
        self._deadline_ms = int(headers.get("Lambda-Runtime-Deadline-Ms", "0"))
        self.function_name = environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "0") or 0)
        self.log_group_name = environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = _json_header(headers, "Lambda-Runtime-Cognito-Identity")
        self.client_context = _json_header(headers, "Lambda-Runtime-Client-Context")
        self.tenant_id = headers.get("Lambda-Runtime-Aws-Tenant-Id")

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))


def _json_header(headers: Mapping[str, str], name: str) -> Any:
    raw = headers.get(name)
    return json.loads(raw) if raw else None


def load_handler(spec: str) -> Handler:
    """``package.module.function`` -> the function."""
    module_name, _, attr = spec.rpartition(".")
    if not module_name:
        raise ValueError(f"handler {spec!r} is not module.function")
    handler: Handler = getattr(importlib.import_module(module_name), attr)
    return handler


def _error_body(exc: BaseException) -> bytes:
    return json.dumps(
        {
            "errorMessage": str(exc),
            "errorType": type(exc).__name__,
            "stackTrace": traceback.format_exception(exc),
        }
    ).encode()


class RuntimeApi:
    """HTTP calls to the Runtime API at ``host:port`` (AWS_LAMBDA_RUNTIME_API)."""

    def __init__(self, address: str) -> None:
        self.base = f"http://{address}/{API_VERSION}/runtime"

    # S310 below: every URL is self.base (http://, built in __init__) plus a fixed path, never a caller's scheme.
    def _post(self, path: str, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        request = urllib.request.Request(f"{self.base}/{path}", data=body, method="POST", headers=dict(headers or {}))  # noqa: S310
        with urllib.request.urlopen(request) as resp:  # noqa: S310
            resp.read()

    def next(self) -> tuple[dict[str, str], bytes]:
        # No timeout: the call blocks until Lambda has an invocation (the sandbox is frozen meanwhile).
        with urllib.request.urlopen(f"{self.base}/invocation/next") as resp:  # noqa: S310
            return dict(resp.headers.items()), resp.read()

    def respond(self, request_id: str, result: Any) -> None:
        self._post(f"invocation/{request_id}/response", json.dumps(result).encode())

    def fail(self, request_id: str, exc: BaseException) -> None:
        self._post(
            f"invocation/{request_id}/error",
            _error_body(exc),
            {"Lambda-Runtime-Function-Error-Type": "Unhandled", "Content-Type": "application/json"},
        )

    def init_error(self, exc: BaseException) -> None:
        self._post("init/error", _error_body(exc), {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"})


def serve(handler_spec: str, environ: Mapping[str, str] | None = None, max_invocations: int | None = None) -> None:
    """Fetch invocations and answer them until the sandbox is shut down (or max_invocations)."""
    env = os.environ if environ is None else environ
    api = RuntimeApi(env["AWS_LAMBDA_RUNTIME_API"])
    try:
        handler = load_handler(handler_spec)
    except Exception as exc:
        api.init_error(exc)
        raise
    served = 0
    while max_invocations is None or served < max_invocations:
        headers, body = api.next()
        context = RuntimeContext(headers, env)
        trace_id = headers.get("Lambda-Runtime-Trace-Id")
        if trace_id and environ is None:
            os.environ["_X_AMZN_TRACE_ID"] = trace_id  # what the X-Ray SDK / powertools Tracer read
        try:
            result = handler(json.loads(body or b"{}"), context)
        except Exception as exc:  # reported to Lambda, which applies the event source's retry rules
            traceback.print_exc()
            api.fail(context.aws_request_id, exc)
        else:
            api.respond(context.aws_request_id, result)
        served += 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m services.lambda_runtime package.module.handler", file=sys.stderr)
        return 2
    serve(args[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
