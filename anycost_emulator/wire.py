"""What passes between the HTTP server and the emulator: requests, answers and the request log.

Plain values with no behaviour beyond building them, so that the server (sockets, parsing) and
the emulator (the application and its state) depend on these and not on each other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from anycost_emulator.jsoncodec import dumps, loads


@dataclass(frozen=True)
class RequestRecord:
    """One API request as seen by the emulator. status 0: closed without a response.

    ``started``/``ended`` are time.monotonic() values; ``ended`` is taken when the request left
    the per-connection in-flight window, just before the response is written. ``replayed``:
    the answer is the one cached under the request's idempotency key.
    """

    method: str
    path: str
    connection: Optional[str]
    status: int
    idempotency_key: Optional[str]
    body_bytes: int
    started: float
    ended: float
    fault: Optional[str]
    replayed: bool = False


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple = ()
    drop_connection: bool = False  # close the socket without writing anything
    replayed: bool = False         # the answer cached under the idempotency key (not sent)


def message(status: int, text: str, headers: tuple = ()) -> Response:
    return Response(status, dumps({"message": text}), headers)


def bad_request(text: str) -> Response:
    return Response(400, dumps({"error": {"message": text, "type": "ValidationError"}}))


def ok(payload: Any) -> Response:
    return Response(200, dumps(payload))


def bad_connection() -> Response:
    return bad_request("connection_id must match [A-Za-z0-9_-]{1,128}")


def format_seconds(seconds: float) -> str:
    """Retry-After value: "2", "0.05" (never exponent notation)."""
    return format(seconds, "f").rstrip("0").rstrip(".") or "0"


def with_retry_after(status: int, text: str, seconds: float) -> Response:
    return message(status, text, (("Retry-After", format_seconds(seconds)),))


@dataclass(frozen=True)
class Route:
    kind: str                      # create | list | month | validate | unknown
    connection: Optional[str] = None
    month: Optional[str] = None
    error: Optional[Response] = None


@dataclass(frozen=True)
class Body:
    data: Optional[bytes]          # None when too large or unreadable
    size: int                      # raw bytes received (or declared, when not read)
    too_large: bool = False
    error: Optional[str] = None


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    route: Route
    body: Body
    namespace: Optional[str]
    idempotency_key: Optional[str]
    content_type: Optional[str]
    content_encoding: Optional[str]
    cache_errors: bool = True      # read once per request: configure() may change it meanwhile


def json_body_error(request: Request) -> Optional[str]:
    """Why the request's headers do not describe uncompressed UTF-8 JSON, or None."""
    encoding = (request.content_encoding or "identity").strip().lower()
    if encoding != "identity":
        return f"Content-Encoding {encoding!r} is not supported; send uncompressed JSON"
    media, _, params = (request.content_type or "").partition(";")
    if media.strip().lower() != "application/json":
        return "Content-Type must be application/json"
    charset = re.search(r"charset\s*=\s*\"?([^\";\s]+)", params, re.I)
    if charset and charset.group(1).lower() not in ("utf-8", "utf8"):
        return "JSON bodies must be UTF-8"
    return None


def parse_request_json(request: Request) -> tuple[Any, Optional[str]]:
    """(object, None) or (None, error message): uncompressed UTF-8 JSON only."""
    problem = json_body_error(request)
    if problem:
        return None, problem
    return decode_json(request.body.data)


def decode_json(data: Optional[bytes]) -> tuple[Any, Optional[str]]:
    """(object, None) or (None, error message) for a body's bytes."""
    try:
        return loads(data or b""), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"body is not valid UTF-8 JSON: {str(exc)[:120]}"
