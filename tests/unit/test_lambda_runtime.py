"""services/lambda_runtime.py against a fake Lambda Runtime API (the three endpoints it uses)."""

from __future__ import annotations

import json
import sys
import threading
import time
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from services import lambda_runtime


class FakeRuntimeApi:
    """Hands out queued events; records responses and errors by request id."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = list(events)
        self.posts: list[tuple[str, dict[str, str], Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                assert self.path == "/2018-06-01/runtime/invocation/next"
                n = len(api.events)
                event = api.events.pop(0)
                body = json.dumps(event).encode()
                self.send_response(200)
                self.send_header("Lambda-Runtime-Aws-Request-Id", f"req-{n}")
                self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30_000))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", "arn:aws:lambda:eu-west-1:123456789012:function:f")
                self.send_header("Lambda-Runtime-Trace-Id", "Root=1-abc")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                api.posts.append((self.path, dict(self.headers.items()), json.loads(self.rfile.read(length))))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def handler_module() -> Iterator[str]:
    module = types.ModuleType("fake_handlers")
    seen: list[Any] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        if event.get("boom"):
            raise ValueError("boom")
        seen.append(context)
        return {"echo": event, "remaining_ms": context.get_remaining_time_in_millis(), "request": context.aws_request_id}

    module.handler = handler  # type: ignore[attr-defined]
    module.seen = seen  # type: ignore[attr-defined]
    sys.modules["fake_handlers"] = module
    yield "fake_handlers.handler"
    del sys.modules["fake_handlers"]


def test_answers_invocations_and_reports_errors(handler_module: str) -> None:
    api = FakeRuntimeApi([{"n": 1}, {"boom": True}])
    env = {"AWS_LAMBDA_RUNTIME_API": api.address, "AWS_LAMBDA_FUNCTION_NAME": "f", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"}
    try:
        lambda_runtime.serve(handler_module, environ=env, max_invocations=2)
    finally:
        api.server.shutdown()
    (ok_path, _, ok_body), (err_path, err_headers, err_body) = api.posts
    assert ok_path == "/2018-06-01/runtime/invocation/req-2/response"
    assert ok_body["echo"] == {"n": 1} and ok_body["request"] == "req-2"
    assert 0 < ok_body["remaining_ms"] <= 30_000
    assert err_path == "/2018-06-01/runtime/invocation/req-1/error"
    assert err_headers["Lambda-Runtime-Function-Error-Type"] == "Unhandled"
    assert (err_body["errorType"], err_body["errorMessage"]) == ("ValueError", "boom")
    context = sys.modules["fake_handlers"].seen[0]  # type: ignore[attr-defined]
    assert (context.function_name, context.memory_limit_in_mb) == ("f", 512)
    assert context.invoked_function_arn.endswith(":function:f")


def test_a_handler_that_cannot_be_imported_is_an_init_error() -> None:
    api = FakeRuntimeApi([])
    try:
        with pytest.raises(ModuleNotFoundError):
            lambda_runtime.serve("no_such_module.handler", environ={"AWS_LAMBDA_RUNTIME_API": api.address})
    finally:
        api.server.shutdown()
    ((path, _, body),) = api.posts
    assert path == "/2018-06-01/runtime/init/error"
    assert body["errorType"] == "ModuleNotFoundError"


def test_every_cartflow_handler_loads() -> None:
    from cartflow.infra.cloudformation import FUNCTIONS

    for f in FUNCTIONS:
        assert callable(lambda_runtime.load_handler(f.handler))
