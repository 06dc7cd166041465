"""The HTTP side of the emulator: a real HTTP/1.1 server on 127.0.0.1, routing, body reading.

Keep-alive, one daemon thread per connection. API requests are routed to the emulator (the
application); ``/_emulator/...`` control requests (loopback only) are answered here by calling
the emulator's control methods. Nothing here knows the CBF rules or what is stored.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Optional

from anycost_emulator.faults import FaultConfig
from anycost_emulator.jsoncodec import loads
from anycost_emulator.rules import show, valid_connection_id, valid_month
from anycost_emulator.wire import (
    Body, Request, RequestRecord, Response, Route, bad_connection, bad_request, message, ok)

if TYPE_CHECKING:  # the emulator imports this module; only the type goes the other way
    from anycost_emulator.emulator import Emulator

LOOPBACK = "127.0.0.1"
API_PREFIX = "/v2/connections/billing/anycost/"
CONTROL_PREFIX = "/_emulator/"
CONTROL_BODY_LIMIT = 5_000_000
# Bodies above max_body_bytes are still read (and discarded) so the client sees the 413 rather
# than a broken pipe; beyond this many bytes the emulator gives up and closes the connection.
DRAIN_CAP_BYTES = 64_000_000
IDLE_TIMEOUT_SECONDS = 60.0

# --------------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------------

_DROPS_RE = re.compile(r"([^/]+)/billing_drops(?:/([^/]+))?")


def route_request(method: str, path: str) -> Route:
    """Map method + path (without query) to a route; route.error is set for 404/405/400."""
    if not path.startswith(API_PREFIX):
        return Route("unknown", error=message(404, "Not Found"))
    rest = path[len(API_PREFIX):]
    if rest == "validate_billing_drop":
        return _route_method(Route("validate"), method, "POST")
    match = _DROPS_RE.fullmatch(rest)
    if match is None:
        return Route("unknown", error=message(404, "Not Found"))
    connection, month = match.groups()
    if month is not None:
        route = Route("month", connection, month)
        if not valid_month(month):
            route = dataclasses.replace(route, error=bad_request(
                f"month in path must be YYYY-MM, got {show(month)}"))
        return _route_method(route, method, "GET")
    kind = "create" if method == "POST" else "list"
    return _route_method(Route(kind, connection), method, "GET", "POST")


def _route_method(route: Route, method: str, *allowed: str) -> Route:
    if method not in allowed:
        return dataclasses.replace(route, error=message(
            405, "Method Not Allowed", (("Allow", ", ".join(allowed)),)))
    return route


# --------------------------------------------------------------------------------------------
# Control endpoints
# --------------------------------------------------------------------------------------------

CONFIGURE_FIELDS = frozenset({"faults", "latency_seconds", "cache_errors"})
PRELOAD_FIELDS = frozenset({"connection", "month", "rows", "cost", "namespace", "nbytes"})


def control_response(emulator: "Emulator", method: str, name: str, body: Body) -> Response:
    """GET stats; POST reset, forget_keys, configure, preload."""
    if (method, name) == ("GET", "stats"):
        return ok(emulator.stats())
    if (method, name) == ("POST", "reset"):
        emulator.reset()
        return ok({"ok": True})
    if (method, name) == ("POST", "forget_keys"):
        emulator.forget_idempotency_keys()
        return ok({"ok": True})
    if (method, name) == ("POST", "configure"):
        return _json_control(body, "configuration", CONFIGURE_FIELDS,
                             lambda settings: emulator.configure(**configure_changes(settings)))
    if (method, name) == ("POST", "preload"):
        return _json_control(body, "preload", PRELOAD_FIELDS,
                             lambda settings: {"drop": emulator.preload(**settings)})
    return message(404, "Not Found")


def _json_control(body: Body, what: str, fields: frozenset, action: Any) -> Response:
    """Parse a JSON object of known fields and run the action: 200, or 400 naming the problem."""
    try:
        settings = loads(body.data or b"{}")
        if not isinstance(settings, dict) or set(settings) - fields:
            raise ValueError(f"expected a JSON object with fields among {sorted(fields)}")
        result = action(settings)
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        return bad_request(f"bad {what}: {exc}")
    return ok({"ok": True, **(result or {})})


def configure_changes(settings: dict) -> dict:
    """The keyword arguments of Emulator.configure from a /_emulator/configure body."""
    changes: dict = {}
    if "faults" in settings:
        changes["faults"] = FaultConfig.from_dict(settings["faults"] or {})
    if "latency_seconds" in settings:
        changes["latency_seconds"] = float(settings["latency_seconds"] or 0.0)
    if "cache_errors" in settings:
        if not isinstance(settings["cache_errors"], bool):
            raise ValueError("cache_errors must be true or false")
        changes["cache_errors"] = settings["cache_errors"]
    return changes


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------

class Server(ThreadingHTTPServer):
    daemon_threads = True
    # Never join handler threads on close: keep-alive handlers may be idle for a long time.
    block_on_close = False

    def __init__(self, address: tuple, emulator: "Emulator") -> None:
        self.emulator = emulator
        self._open_sockets: set[socket.socket] = set()
        self._sockets_lock = threading.Lock()
        super().__init__(address, Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._sockets_lock:
            self._open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._sockets_lock:
            self._open_sockets.discard(request)
        super().shutdown_request(request)

    def close_open_sockets(self) -> None:
        with self._sockets_lock:
            sockets = list(self._open_sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AnyCostEmulator/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT_SECONDS
    server: Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence access log
        pass

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    # ----- dispatch -------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        emulator = self.server.emulator
        path = self.path.split("?", 1)[0]
        if path.startswith(CONTROL_PREFIX):
            self._send(self._control(emulator, method, path))
            return
        started = time.monotonic()
        route = route_request(method, path)
        response, fault, body_size = message(500, "Internal Server Error"), None, 0
        try:
            response, fault, body_size = self._api(emulator, method, path, route)
        except Exception:  # a bug in the emulator: report it as 500 and count it
            emulator._note_internal_error()
            traceback.print_exc()
            self.close_connection = True
        emulator._record(RequestRecord(
            method=method, path=path, connection=route.connection, status=response.status,
            idempotency_key=self.headers.get("cloudzero-idempotency-key") or None,
            body_bytes=body_size, started=started, ended=time.monotonic(), fault=fault,
            replayed=response.replayed))
        self._send(response)

    def _api(self, emulator: "Emulator", method: str, path: str,
             route: Route) -> tuple[Response, Optional[str], int]:
        """Checks that need only the headers, then the in-flight window. The window is left
        before the response is written, so a client that sends its next request as soon as it
        reads this response never trips the concurrency check."""
        cache_errors = emulator.cache_errors
        if route.kind == "create":
            emulator._note_post()
        early = self._early_rejection(emulator, route, cache_errors)
        if early is not None:
            response, fault = early
            return response, fault, self._read_body(0).size
        with emulator._in_flight_window(route.connection) as admitted:
            if not admitted:
                size = self._read_body(0).size
                return message(429, "concurrent request for connection"), None, size
            body = self._read_body(emulator.max_body_bytes)
            if body.error:
                return bad_request(body.error), None, body.size
            request = self._request(method, path, route, body, cache_errors)
            response, fault = emulator._serve(request)
            return response, fault, body.size

    def _early_rejection(self, emulator: "Emulator", route: Route,
                         cache_errors: bool) -> Optional[tuple[Response, Optional[str]]]:
        """Answers that need only the headers. Without the right API key nothing can be matched
        to an idempotency key; with cache_errors, a create request's other refusals are the
        application's, cached under its key (see Emulator._refusal)."""
        if route.error is not None and route.error.status in (404, 405):
            return route.error, None
        if not emulator._authorized(self.headers.get("Authorization")):
            return message(403, "Forbidden"), None
        if route.kind == "create" and cache_errors:
            return None
        if emulator._forbidden():
            return message(403, "Forbidden"), "forbidden"
        if route.connection is not None and not valid_connection_id(route.connection):
            return bad_connection(), None
        if route.error is not None:
            return route.error, None
        return None

    def _request(self, method: str, path: str, route: Route, body: Body,
                 cache_errors: bool) -> Request:
        return Request(
            method=method, path=path, route=route, body=body, cache_errors=cache_errors,
            namespace=self.headers.get("cloudzero-test-key") or None,
            idempotency_key=self.headers.get("cloudzero-idempotency-key") or None,
            content_type=self.headers.get("Content-Type"),
            content_encoding=self.headers.get("Content-Encoding"),
        )

    def _control(self, emulator: "Emulator", method: str, path: str) -> Response:
        body = self._read_body(CONTROL_BODY_LIMIT)
        if self.client_address[0] != LOOPBACK:
            return message(403, "Forbidden")
        try:
            return control_response(emulator, method, path[len(CONTROL_PREFIX):], body)
        except Exception:
            emulator._note_internal_error()
            traceback.print_exc()
            return message(500, "Internal Server Error")

    # ----- body reading ---------------------------------------------------------------------

    def _read_body(self, limit: int) -> Body:
        """Read the request body. Bodies above `limit` are drained and discarded (too_large)."""
        body = self._read_raw_body(limit)
        self.server.emulator._note_body(body.size)
        if body.error:
            self.close_connection = True
        return body

    def _read_raw_body(self, limit: int) -> Body:
        encoding = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        if encoding:
            if encoding != "chunked":
                return Body(None, 0, error=f"unsupported Transfer-Encoding {encoding!r}")
            return self._read_chunked(limit)
        declared = (self.headers.get("Content-Length") or "0").strip()
        if not (declared.isascii() and declared.isdigit()):
            return Body(None, 0, error="invalid Content-Length")
        size = int(declared)
        if size > limit:
            if size > DRAIN_CAP_BYTES:
                self.close_connection = True  # too big to drain; drop the connection after 413
            else:
                self._discard(size)
            return Body(None, size, too_large=True)
        data = self.rfile.read(size)
        if len(data) < size:
            return Body(None, len(data), error="body shorter than Content-Length")
        return Body(data, size)

    def _discard(self, size: int) -> None:
        while size > 0:
            chunk = self.rfile.read(min(size, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            size -= len(chunk)

    def _read_chunked(self, limit: int) -> Body:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return Body(None, total, error="malformed chunked body")
            if size == 0:
                break
            total += size
            if total > DRAIN_CAP_BYTES:
                self.close_connection = True
                return Body(None, total, too_large=True)
            chunk = self.rfile.read(size)
            if total <= limit:
                parts.append(chunk)
            self.rfile.readline(8)  # the CRLF after each chunk
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass  # trailer fields
        if total > limit:
            return Body(None, total, too_large=True)
        return Body(b"".join(parts), total)

    # ----- writing ------------------------------------------------------------------------

    def _send(self, response: Response) -> None:
        if response.drop_connection:
            self._abort_connection()
            return
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(response.body)
        except OSError:  # the client gave up (e.g. timed out during a slow fault)
            self.close_connection = True

    def _abort_connection(self) -> None:
        """Close without a response; the client sees the connection reset or closed."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


