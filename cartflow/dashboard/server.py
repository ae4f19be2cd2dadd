"""The dashboard's HTTP server: the standard library's ThreadingHTTPServer, no framework.

Routes (GET only):
    /                   the page (server-rendered; dashboard.js polls /api/sections)
    /api/sections       the page's sections, re-rendered from the current view model
    /api/dashboard.json the view model as JSON (Decimals as exact strings)
    /static/<file>      CSS and JS shipped as package data (nothing from a CDN)
    /healthz            200 "ok" while serving (the compose healthcheck)
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from types import FrameType
from typing import Any

from cartflow.core.deps import Deps
from cartflow.dashboard.data import Dashboard, DashboardData
from cartflow.dashboard.render import page, sections

STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
# A poll within this many seconds of the last build is answered from it (several tabs, one scan).
REUSE_SECONDS = 1.0


class DashboardServer(ThreadingHTTPServer):
    # Not daemon threads: server_close() then joins the requests in flight. A daemon thread
    # still inside deltalake's native reader when the interpreter finalizes can crash the
    # process on SIGTERM (seen: exit -11 under a 1 s refresh).
    daemon_threads = False

    def __init__(self, address: tuple[str, int], data: DashboardData, refresh_seconds: float) -> None:
        super().__init__(address, _Handler)
        self.data = data
        self.refresh_seconds = refresh_seconds
        self._last: tuple[float, Dashboard] | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"

    def view(self) -> Dashboard:
        with self._lock:
            if self._last is None or time.monotonic() - self._last[0] > REUSE_SECONDS:
                self._last = (time.monotonic(), self.data.build())
            return self._last[1]


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "cartflow-dashboard"
    timeout = 30  # seconds a silent client may hold its thread (shutdown joins every thread)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per poll would drown the console; errors still reach the page

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; style-src 'self' 'unsafe-inline'")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
        elif path in ("/", "/index.html"):
            html = page(self.server.view(), self.server.refresh_seconds)
            self._send(HTTPStatus.OK, html.encode(), "text/html; charset=utf-8")
        elif path == "/api/sections":
            self._send(HTTPStatus.OK, sections(self.server.view()).encode(), "text/html; charset=utf-8")
        elif path == "/api/dashboard.json":
            view = self.server.view()
            status = HTTPStatus.SERVICE_UNAVAILABLE if view.error else HTTPStatus.OK
            self._send(status, json.dumps(view.to_json(), indent=1).encode(), "application/json")
        elif path.startswith("/static/"):
            self._static(path.removeprefix("/static/"))
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _static(self, name: str) -> None:
        suffix = name[name.rfind(".") :] if "." in name else ""
        # Only flat names of the known types: no traversal, nothing but the shipped files.
        if "/" in name or "\\" in name or name.startswith(".") or suffix not in STATIC_TYPES:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
            return
        res = resources.files("cartflow.dashboard") / "static" / name
        if not res.is_file():
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
            return
        self._send(HTTPStatus.OK, res.read_bytes(), STATIC_TYPES[suffix])


def make_server(
    deps: Deps, host: str = "127.0.0.1", port: int = 8050, refresh_seconds: float = 5.0, use_delta: bool = True
) -> DashboardServer:
    """Bound, not yet serving: call serve_forever() (or run it in a thread) and shutdown()."""
    return DashboardServer((host, port), DashboardData(deps, use_delta=use_delta), refresh_seconds)


def serve(
    deps: Deps,
    host: str = "127.0.0.1",
    port: int = 8050,
    refresh_seconds: float = 5.0,
    use_delta: bool = True,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM -> KeyboardInterrupt or SystemExit)."""
    server = make_server(deps, host, port, refresh_seconds, use_delta)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # `docker stop`: close the socket, exit 0
    if on_ready:
        on_ready(server.url)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
