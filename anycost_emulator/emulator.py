"""Local emulator of CloudZero's AnyCost Stream API, for tests, benchmarks and demos.

A real HTTP/1.1 server (keep-alive, one daemon thread per connection) bound to 127.0.0.1 only.
It implements the contract in docs/anycost-api.md in its strictest reading:

* raw-key ``Authorization`` (403), 5,000,000-byte bodies (413), CBF row validation (400),
  ``sum`` / ``replace_drop`` / ``replace_hourly`` per (connection, month), the monthly limits,
  ``cloudzero-idempotency-key`` replays and ``cloudzero-test-key`` namespaces;
* one request in flight per connection id: a second one gets 429 and is counted in
  ``concurrency_violations``;
* reproducible fault injection on create requests (``FaultConfig``).

``mode="throughput"`` skips per-row validation and does not store rows; it only counts rows and
the exact Decimal sum of ``cost/cost`` per UTC hour, so a million-row benchmark stays cheap.

In-process use::

    with Emulator(api_key="k") as emu:
        requests.post(f"{emu.url}/v2/connections/billing/anycost/c1/billing_drops", ...)
        emu.totals()

Subprocess use: ``python -m anycost_emulator --port 0 --port_file PATH`` (see ``main``), then the
``/_emulator/...`` control endpoints.

Standard library only; orjson is used when installed.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import decimal
import functools
import hashlib
import hmac
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable, Iterator, NamedTuple, Optional, Union

try:  # optional speed-up; the emulator behaves the same without it
    import orjson
except ImportError:  # pragma: no cover - exercised only where orjson is missing
    orjson = None

# --------------------------------------------------------------------------------------------
# Limits and the CBF vocabulary. The limits are read at call time, so tests can monkeypatch them.
# --------------------------------------------------------------------------------------------

LOOPBACK = "127.0.0.1"
DEFAULT_MAX_BODY_BYTES = 5_000_000
MONTH_ROW_LIMIT = 1_000_000
MONTH_BYTE_LIMIT = 70_000_000
MAX_REPORTED_ERRORS = 100
DEFAULT_RETRY_AFTER = 0.05
# Bodies above max_body_bytes are still read (and discarded) so the client sees the 413 rather
# than a broken pipe; beyond this many bytes the emulator gives up and closes the connection.
DRAIN_CAP_BYTES = 64_000_000
IDLE_TIMEOUT_SECONDS = 60.0

API_PREFIX = "/v2/connections/billing/anycost/"
CONTROL_PREFIX = "/_emulator/"
CONFIGURE_FIELDS = frozenset({"faults", "latency_seconds", "cache_errors"})

OPERATIONS = frozenset({"sum", "replace_drop", "replace_hourly"})
DEFAULT_OPERATION = "replace_drop"
BODY_FIELDS = frozenset({"month", "operation", "data"})
REQUIRED_COLUMNS = ("time/usage_start", "cost/cost")
NUMERIC_COLUMNS = frozenset({
    "cost/cost", "cost/discounted_cost", "cost/amortized_cost",
    "cost/discounted_amortized_cost", "cost/on_demand_cost", "usage/amount",
})
TIMESTAMP_COLUMNS = frozenset({"time/usage_start", "time/usage_end"})
CBF_COLUMNS = NUMERIC_COLUMNS | TIMESTAMP_COLUMNS | frozenset({
    "lineitem/id", "lineitem/type", "lineitem/description", "lineitem/cloud_provider",
    "resource/id", "resource/service", "resource/account", "resource/region",
    "resource/usage_family", "action/operation", "action/usage_type", "action/region",
    "action/account", "usage/units", "bill/invoice_id",
    "k8s/cluster", "k8s/namespace", "k8s/deployment", "k8s/labels",
})
TAG_PREFIX = "resource/tag:"
LINEITEM_TYPES = frozenset({
    "Usage", "Tax", "Support", "Purchase", "CommittedUsePurchase", "Discount", "Credit", "Fee",
    "Adjustment", "CommittedUseVacancy", "CommittedUseRecurringFee",
})

# fullmatch + explicit [0-9] everywhere: `\d` would accept non-ASCII digits and `$` a trailing \n.
_CONNECTION_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_MONTH_RE = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
_NUMBER_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_TAG_KEY_RE = re.compile(r"[A-Za-z0-9_.:/=+\-@]+")
_TIMESTAMP_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?"
    r"(?:Z|([+-])([0-9]{2}):([0-9]{2}))"
)

# Exact decimal arithmetic: additions never round, whatever the magnitudes involved.
_EXACT = decimal.Context(
    prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
    traps=[decimal.InvalidOperation],
)

# Faults by where they come from. CloudZero's application caches its answer under the
# idempotency key (when cache_errors is on); the load balancer and the gateway answer before the
# application sees the request, so their errors are never cached; "slow" and "drop_after_apply"
# apply the drop and then delay or lose the (cached) success on its way back.
APPLICATION_FAULTS = frozenset({"5xx", "503_retry_after"})
FRONT_FAULTS = frozenset({"front_5xx", "429"})
AFTER_APPLY_FAULTS = frozenset({"slow", "drop_after_apply"})
SCRIPT_FAULTS = APPLICATION_FAULTS | FRONT_FAULTS | AFTER_APPLY_FAULTS | {"ok"}


# --------------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------------

def _dumps(obj: Any) -> bytes:
    if orjson is not None:
        return orjson.dumps(obj)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(data: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity (orjson is strict by itself)."""
    if orjson is not None:
        return orjson.loads(data)
    return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)


# --------------------------------------------------------------------------------------------
# Validation (pure functions, shared by the create and validate endpoints)
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1 << 16)
def parse_timestamp(value: str) -> Optional[tuple[str, str]]:
    """Return (UTC month "YYYY-MM", UTC hour "YYYY-MM-DDTHH") or None when not a valid timestamp.

    Cached: a body usually repeats the same few hours thousands of times.
    """
    m = _TIMESTAMP_RE.fullmatch(value)
    if m is None:
        return None
    y, mo, d, hh, mi, ss, sign, oh, om = m.groups()
    try:
        moment = datetime(int(y), int(mo), int(d), int(hh), int(mi), int(ss))
        if sign is not None:
            if int(oh) > 23 or int(om) > 59:
                return None
            offset = timedelta(hours=int(oh), minutes=int(om))
            moment = moment - offset if sign == "+" else moment + offset
    except (ValueError, OverflowError):
        return None
    hour = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}"
    return hour[:7], hour


def utc_hour(value: str) -> Optional[str]:
    """UTC hour key of a timestamp; the common "...Z" form needs no parsing."""
    if value.endswith("Z") and len(value) >= 20:
        return value[:13]
    parsed = parse_timestamp(value)
    return parsed[1] if parsed else None


def parse_month(value: Any) -> Optional[str]:
    """The body's month: "YYYY-MM", or a valid ISO timestamp whose first 7 characters give it."""
    if not isinstance(value, str):
        return None
    if _MONTH_RE.fullmatch(value):
        return value
    if parse_timestamp(value) is not None and _MONTH_RE.fullmatch(value[:7]):
        return value[:7]
    return None


def _show(value: str, limit: int = 60) -> str:
    """A value for an error message, quoted and truncated."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _is_known_column(column: str) -> bool:
    if column in CBF_COLUMNS:
        return True
    return column.startswith(TAG_PREFIX) and bool(_TAG_KEY_RE.fullmatch(column[len(TAG_PREFIX):]))


def _value_error(column: str, value: str) -> Optional[str]:
    """What is wrong with one non-empty string value of a known column, if anything."""
    if column in NUMERIC_COLUMNS:
        if not _NUMBER_RE.fullmatch(value):
            return f"invalid decimal number {_show(value)} (digits with optional '-' and fraction; no exponent)"
    elif column in TIMESTAMP_COLUMNS:
        if parse_timestamp(value) is None:
            return f"invalid timestamp {_show(value)} (expected YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM))"
    elif column == "lineitem/type" and value not in LINEITEM_TYPES:
        return f"unknown lineitem/type {_show(value)}"
    return None


def _cell_problem(column: str, value: Any) -> Optional[str]:
    if not _is_known_column(column):
        return "unknown column"
    if not isinstance(value, str):
        return f"value must be a string, not {type(value).__name__}"
    return _value_error(column, value) if value else None


def _cell_errors(index: int, row: dict) -> Iterator[str]:
    for column, value in row.items():
        problem = _cell_problem(column, value)
        if problem:
            yield f"data[{index}][{column!r}]: {problem}"


def _row_rule_errors(index: int, row: dict, month: Optional[str]) -> Iterator[str]:
    for column in REQUIRED_COLUMNS:
        if column not in row:
            yield f"data[{index}][{column!r}]: missing required column"
        elif row[column] == "":
            yield f"data[{index}][{column!r}]: required value is empty"
    has_tag_value = any(
        column.startswith(TAG_PREFIX) and isinstance(value, str) and value
        for column, value in row.items()
    )
    if has_tag_value and not row.get("resource/id"):
        yield f"data[{index}]['resource/id']: required when a resource/tag column has a value"
    start = row.get("time/usage_start")
    parsed = parse_timestamp(start) if isinstance(start, str) and start else None
    if parsed and month and parsed[0] != month:
        yield (f"data[{index}]['time/usage_start']: {_show(start)} is in {parsed[0]} (UTC), "
               f"not in the body's month {month}")


def row_errors(index: int, row: Any, month: Optional[str]) -> list[str]:
    """All problems of one CBF row (month None: skip the month check)."""
    if not isinstance(row, dict):
        return [f"data[{index}]: row must be a JSON object, not {type(row).__name__}"]
    return list(_cell_errors(index, row)) + list(_row_rule_errors(index, row, month))


def envelope_errors(obj: Any) -> list[str]:
    """Problems with the body outside the rows: month, operation, data, unknown fields."""
    if not isinstance(obj, dict):
        return ["body must be a JSON object"]
    errors = [f"unknown top-level field {name!r}" for name in obj if name not in BODY_FIELDS]
    if "month" not in obj:
        errors.append("month: missing (expected YYYY-MM)")
    elif parse_month(obj["month"]) is None:
        errors.append(f"month: invalid value {obj['month']!r} (expected YYYY-MM)")
    if obj.get("operation", DEFAULT_OPERATION) not in OPERATIONS:
        errors.append(f"operation: must be one of {sorted(OPERATIONS)}, got {obj['operation']!r}")
    if not isinstance(obj.get("data"), list):
        errors.append("data: missing or not a list of row objects")
    return errors


def validate_body(obj: Any) -> list[str]:
    """Every problem with a create/validate body, as messages naming row index and column.

    Returns [] for a valid body. Stops after MAX_REPORTED_ERRORS messages.
    """
    errors = envelope_errors(obj)
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        return errors
    month = parse_month(obj.get("month"))
    for index, row in enumerate(obj["data"]):
        errors.extend(row_errors(index, row, month))
        if len(errors) >= MAX_REPORTED_ERRORS:
            return errors[:MAX_REPORTED_ERRORS] + [
                f"too many errors: stopped after {MAX_REPORTED_ERRORS}"]
    return errors


def _error_summary(errors: list[str], shown: int = 5) -> str:
    text = "; ".join(errors[:shown])
    if len(errors) > shown:
        text += f" (and {len(errors) - shown} more)"
    return text


# --------------------------------------------------------------------------------------------
# Public value types
# --------------------------------------------------------------------------------------------

@dataclass
class FaultConfig:
    """Faults injected into create (POST billing_drops) requests. All off by default.

    No fault applies the drop except ``slow`` and ``drop_after_apply``, which apply it first and
    then delay or lose the answer, leaving the client in doubt. Where a fault comes from decides
    whether CloudZero caches it under the idempotency key:

    * application faults (``rate_5xx``, script ``5xx`` / ``503_retry_after``): CloudZero's
      application answered, so the answer is cached and replayed to every retry with that key
      when the emulator runs with ``cache_errors`` (the default), like CloudZero;
    * front faults (``rate_front_5xx``: a load balancer's 502/503/504, script ``front_5xx``;
      ``rate_429``: the gateway's 429): the application never saw the request; never cached.

    ``script`` is consumed one name per create request, before any random decision. An
    application fault drawn for a request whose key already has a cached answer has no effect:
    the key is checked first.
    """

    rate_5xx: float = 0.0
    retry_after_5xx: Optional[float] = None   # set: 5xx are 503 with Retry-After; else 500/502
    rate_429: float = 0.0
    retry_after_429: float = DEFAULT_RETRY_AFTER
    rate_front_5xx: float = 0.0
    retry_after_front_5xx: Optional[float] = None  # set: 503 with Retry-After; else 502/503/504
    rate_slow: float = 0.0
    slow_seconds: float = 1.0
    rate_drop_after_apply: float = 0.0
    forbid_after_drops: Optional[int] = None  # after that many applied drops, every request: 403
    script: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("rate_5xx", "rate_429", "rate_slow", "rate_drop_after_apply",
                     "rate_front_5xx"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        unknown = [name for name in self.script if name not in SCRIPT_FAULTS]
        if unknown:
            raise ValueError(f"unknown script fault(s) {unknown}; known: {sorted(SCRIPT_FAULTS)}")
        self.script = list(self.script)

    @classmethod
    def from_dict(cls, values: dict) -> "FaultConfig":
        if not isinstance(values, dict):
            raise ValueError("faults must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s) {unknown}")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


# --------------------------------------------------------------------------------------------
# Internal value types
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    headers: tuple = ()
    drop_connection: bool = False  # close the socket without writing anything
    replayed: bool = False         # the answer cached under the idempotency key (not sent)


_DROP = _Response(0, drop_connection=True)


def _message(status: int, text: str, headers: tuple = ()) -> _Response:
    return _Response(status, _dumps({"message": text}), headers)


def _bad_request(text: str) -> _Response:
    return _Response(400, _dumps({"error": {"message": text, "type": "ValidationError"}}))


def _ok(payload: Any) -> _Response:
    return _Response(200, _dumps(payload))


def _unavailable(retry_after: float) -> _Response:
    return _message(503, "Service Unavailable", (("Retry-After", _format_seconds(retry_after)),))


def _bad_connection() -> _Response:
    return _bad_request("connection_id must match [A-Za-z0-9_-]{1,128}")


_FRONT_5XX_TEXT = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclass(frozen=True)
class _Route:
    kind: str                      # create | list | month | validate
    connection: Optional[str] = None
    month: Optional[str] = None
    error: Optional[_Response] = None


@dataclass(frozen=True)
class _Body:
    data: Optional[bytes]          # None when too large or unreadable
    size: int                      # raw bytes received (or declared, when not read)
    too_large: bool = False
    error: Optional[str] = None


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    route: _Route
    body: _Body
    namespace: Optional[str]
    idempotency_key: Optional[str]
    content_type: Optional[str]
    content_encoding: Optional[str]
    cache_errors: bool = True      # read once per request: configure() may change it meanwhile


class _StoredRow(NamedTuple):  # a NamedTuple: cheap to create a million of
    row: dict
    hour: str
    cost: Decimal
    nbytes: int


@dataclass
class _Batch:
    """A validated body, prepared outside the data lock."""

    month: str
    operation: str
    row_count: int
    cost: Decimal
    nbytes: int = 0
    rows: list = field(default_factory=list)           # store mode: [_StoredRow]
    hours: dict = field(default_factory=dict)          # throughput: {hour: [rows, cost]}


def _exact_sum(values: Iterable[Decimal], start: Decimal = Decimal(0)) -> Decimal:
    with decimal.localcontext(_EXACT):
        return sum(values, start)


def _limit_error(month: str, rows: int, nbytes: Optional[int]) -> Optional[str]:
    if rows > MONTH_ROW_LIMIT:
        return f"month {month} would hold {rows} rows, more than the limit of {MONTH_ROW_LIMIT}"
    if nbytes is not None and nbytes > MONTH_BYTE_LIMIT:
        return (f"month {month} would hold {nbytes} bytes of rows, "
                f"more than the limit of {MONTH_BYTE_LIMIT}")
    return None


class _StoredMonth:
    """Store mode: the rows of one (connection, month), in upload order."""

    def __init__(self) -> None:
        self.rows: list[_StoredRow] = []
        self.nbytes = 0
        self.cost = Decimal(0)
        self.bodies = 0

    def apply(self, batch: _Batch) -> Optional[str]:
        """Apply a drop; on a limit error return the message and change nothing."""
        if batch.operation == "sum":
            kept, kept_bytes, kept_cost = self.rows, self.nbytes, self.cost
        elif batch.operation == "replace_drop":
            kept, kept_bytes, kept_cost = [], 0, Decimal(0)
        else:  # replace_hourly: drop the stored rows of every hour the body mentions
            hours = {r.hour for r in batch.rows}
            kept = [r for r in self.rows if r.hour not in hours]
            kept_bytes = sum(r.nbytes for r in kept)
            kept_cost = _exact_sum(r.cost for r in kept)
        error = _limit_error(batch.month, len(kept) + batch.row_count, kept_bytes + batch.nbytes)
        if error:
            return error
        if kept is self.rows:
            self.rows.extend(batch.rows)
        else:
            self.rows = kept + batch.rows
        self.nbytes = kept_bytes + batch.nbytes
        self.cost = _exact_sum([batch.cost], kept_cost)
        self.bodies += 1
        return None

    @property
    def row_count(self) -> int:
        return len(self.rows)


class _CountedMonth:
    """Throughput mode: per UTC hour, the row count and exact cost sum; no rows kept."""

    def __init__(self) -> None:
        self.hours: dict[str, list] = {}
        self.row_count = 0
        self.bodies = 0

    @property
    def cost(self) -> Decimal:
        return _exact_sum(agg[1] for agg in self.hours.values())

    def apply(self, batch: _Batch) -> Optional[str]:
        if batch.operation == "sum":
            kept_rows = self.row_count
        elif batch.operation == "replace_drop":
            kept_rows = 0
        else:
            kept_rows = self.row_count - sum(
                self.hours[h][0] for h in batch.hours if h in self.hours)
        error = _limit_error(batch.month, kept_rows + batch.row_count, None)
        if error:
            return error
        if batch.operation == "replace_drop":
            self.hours = {}
        for hour, (rows, cost) in batch.hours.items():
            current = self.hours.get(hour)
            if current is None or batch.operation == "replace_hourly":
                self.hours[hour] = [rows, cost]
            else:
                current[0] += rows
                current[1] = _exact_sum([cost], current[1])
        self.row_count = kept_rows + batch.row_count
        self.bodies += 1
        return None


@dataclass
class _Connection:
    months: dict = field(default_factory=dict)    # month -> _StoredMonth | _CountedMonth
    drops: list = field(default_factory=list)     # [{"drop_id", "month", "row_count"}]


@dataclass(frozen=True)
class _Remembered:
    response: _Response
    digest: bytes


# --------------------------------------------------------------------------------------------
# Body preparation (outside the lock)
# --------------------------------------------------------------------------------------------

def _json_body_error(request: _Request) -> Optional[str]:
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


def _parse_request_json(request: _Request) -> tuple[Any, Optional[str]]:
    """(object, None) or (None, error message)."""
    problem = _json_body_error(request)
    if problem:
        return None, problem
    try:
        return _loads(request.body.data or b""), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"body is not valid UTF-8 JSON: {str(exc)[:120]}"


def _store_batch(obj: dict) -> _Batch:
    """A fully validated body as stored rows."""
    rows = []
    with decimal.localcontext(_EXACT):
        for row in obj["data"]:
            hour = utc_hour(row["time/usage_start"])
            rows.append(_StoredRow(row, hour, Decimal(row["cost/cost"]), len(_dumps(row))))
    return _Batch(
        month=parse_month(obj["month"]),
        operation=obj.get("operation", DEFAULT_OPERATION),
        row_count=len(rows),
        cost=_exact_sum(r.cost for r in rows),
        nbytes=sum(r.nbytes for r in rows),
        rows=rows,
    )


def _count_hours(data: list) -> dict:
    """Throughput mode: {utc hour: [rows, exact cost]}. Raises on malformed rows."""
    hours: dict[str, list] = {}
    hour_of: dict[str, Optional[str]] = {}  # rows share few timestamps: parse each once
    with decimal.localcontext(_EXACT):
        for row in data:
            start = row["time/usage_start"]
            hour = hour_of.get(start)
            if hour is None:
                hour = hour_of[start] = utc_hour(start)
            if hour is None:
                raise ValueError("bad time/usage_start")
            cost = Decimal(row["cost/cost"])
            agg = hours.get(hour)
            if agg is None:
                hours[hour] = [1, cost]
            else:
                agg[0] += 1
                agg[1] += cost
    if not all(agg[1].is_finite() for agg in hours.values()):
        raise ValueError("cost/cost is not a finite number")
    return hours


def _throughput_batch(obj: Any) -> Union[_Batch, _Response]:
    """Light checks only: envelope shape, then per-hour counting."""
    problems = [e for e in envelope_errors(obj) if not e.startswith("unknown top-level")]
    if problems:
        return _bad_request(_error_summary(problems))
    try:
        hours = _count_hours(obj["data"])
    except (KeyError, TypeError, AttributeError, ValueError, decimal.InvalidOperation) as exc:
        return _bad_request(f"data: malformed row ({type(exc).__name__}: {str(exc)[:80]})")
    return _Batch(
        month=parse_month(obj["month"]),
        operation=obj.get("operation", DEFAULT_OPERATION),
        row_count=sum(agg[0] for agg in hours.values()),
        cost=_exact_sum(agg[1] for agg in hours.values()),
        hours=hours,
    )


def _format_seconds(seconds: float) -> str:
    """Retry-After value: "2", "0.05" (never exponent notation)."""
    return format(seconds, "f").rstrip("0").rstrip(".") or "0"


def _body_digest(data: Optional[bytes]) -> bytes:
    return hashlib.blake2b(data or b"", digest_size=16).digest()


def _key_scope(request: _Request) -> Optional[tuple]:
    """CloudZero scopes an idempotency key to the HTTP method and path (here also the test-key
    namespace, a separate world of its own)."""
    if request.idempotency_key is None:
        return None
    return (request.namespace, request.method, request.path, request.idempotency_key)


def _money(value: Decimal) -> str:
    return format(value, "f")


# --------------------------------------------------------------------------------------------
# The emulator
# --------------------------------------------------------------------------------------------

class Emulator:
    """The AnyCost Stream emulator: an HTTP server plus its inspectable state."""

    def __init__(
        self,
        api_key: str,
        mode: str = "store",
        host: str = LOOPBACK,
        port: int = 0,
        latency_seconds: float = 0.0,
        faults: Optional[FaultConfig] = None,
        seed: int = 0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        cache_errors: bool = True,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must be a non-empty string")
        if mode not in ("store", "throughput"):
            raise ValueError("mode must be 'store' or 'throughput'")
        if host != LOOPBACK:
            raise ValueError(f"the emulator only binds {LOOPBACK}")
        self.api_key = api_key
        self.mode = mode
        self.host = host
        self.max_body_bytes = max_body_bytes
        self.seed = seed
        self._requested_port = port
        self._lock = threading.RLock()
        self._faults = faults or FaultConfig()
        self.latency_seconds = latency_seconds
        # Like CloudZero: the first answer to an idempotency key is cached whatever its status.
        # False: only answers to bodies the application parsed (200, 400) are remembered.
        self.cache_errors = bool(cache_errors)
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._in_flight: set[str] = set()
        self._clear_state()

    # ----- lifecycle --------------------------------------------------------------------------

    def start(self) -> "Emulator":
        if self._server is not None:
            return self
        self._stopping = threading.Event()
        self._server = _Server((self.host, self._requested_port), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
            name="anycost-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()            # wakes handlers sleeping on latency/slow faults
        server.shutdown()
        server.close_open_sockets()     # wakes handlers idling on keep-alive connections
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator is not running")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # ----- inspection -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the request log (API requests; not the /_emulator/ control calls)."""
        with self._lock:
            return list(self._requests)

    def totals(self, namespace: Optional[str] = None) -> dict:
        """{connection: {month: {"rows": int, "cost": Decimal, "bodies": int}}}.

        rows and cost describe what the month holds now; bodies counts every drop applied to it.
        """
        with self._lock:
            connections = self._stores.get(namespace, {})
            return {
                name: {
                    month: {"rows": m.row_count, "cost": m.cost, "bodies": m.bodies}
                    for month, m in conn.months.items()
                }
                for name, conn in connections.items()
            }

    def rows(self, connection: str, month: str, namespace: Optional[str] = None) -> list[dict]:
        """Copies of the rows a month holds, in upload order. Always [] in throughput mode."""
        with self._lock:
            conn = self._stores.get(namespace, {}).get(connection)
            stored = conn.months.get(month) if conn else None
            if not isinstance(stored, _StoredMonth):
                return []
            return [dict(r.row) for r in stored.rows]

    def stats(self) -> dict:
        """Every counter and total as a JSON-able dict (costs as decimal strings)."""
        with self._lock:
            return {
                "mode": self.mode,
                "post_count": self.post_count,
                "applied_drops": self.applied_drops,
                "idempotent_replays": self.idempotent_replays,
                "error_replays": self.error_replays,
                "idempotency_key_mismatches": self.idempotency_key_mismatches,
                "concurrency_violations": self.concurrency_violations,
                "max_body_bytes_seen": self.max_body_bytes_seen,
                "internal_errors": self.internal_errors,
                "request_count": len(self._requests),
                "status_counts": dict(self._status_counts),
                "faults_injected": dict(self._faults_injected),
                "faults": self._faults.to_dict(),
                "latency_seconds": self.latency_seconds,
                "cache_errors": self.cache_errors,
                "totals": self._json_totals(None),
                "namespaces": {ns: self._json_totals(ns) for ns in self._stores if ns is not None},
            }

    def _json_totals(self, namespace: Optional[str]) -> dict:
        return {
            conn: {month: {**t, "cost": _money(t["cost"])} for month, t in months.items()}
            for conn, months in self.totals(namespace).items()
        }

    # ----- control ----------------------------------------------------------------------------

    _UNSET: Any = object()

    def configure(self, faults: Any = _UNSET, latency_seconds: Any = _UNSET,
                  cache_errors: Any = _UNSET) -> None:
        """Change faults, latency and/or error caching; new faults re-arm their script.
        Answers already cached stay cached (``forget_idempotency_keys`` clears them)."""
        with self._lock:
            if cache_errors is not self._UNSET:
                if not isinstance(cache_errors, bool):
                    raise ValueError("cache_errors must be true or false")
                self.cache_errors = cache_errors
            if faults is not self._UNSET:
                self._faults = faults or FaultConfig()
                self._script = collections.deque(self._faults.script)
            if latency_seconds is not self._UNSET:
                self.latency_seconds = float(latency_seconds or 0.0)

    def forget_idempotency_keys(self) -> None:
        with self._lock:
            self._keys.clear()

    def reset(self) -> None:
        """Clear data, keys, counters and the request log. Faults and latency stay configured;
        the random generator is re-seeded and the fault script re-armed."""
        with self._lock:
            self._clear_state()

    def _clear_state(self) -> None:
        self._stores: dict[Optional[str], dict[str, _Connection]] = {}
        self._keys: dict[tuple, _Remembered] = {}
        self._requests: list[RequestRecord] = []
        self._status_counts: collections.Counter = collections.Counter()
        self._faults_injected: collections.Counter = collections.Counter()
        self._rng = random.Random(self.seed)
        self._script = collections.deque(self._faults.script)
        self.post_count = 0
        self.applied_drops = 0
        self.idempotent_replays = 0
        self.error_replays = 0
        self.idempotency_key_mismatches = 0
        self.concurrency_violations = 0
        self.max_body_bytes_seen = 0
        self.internal_errors = 0

    # ----- hooks used by the request handler ----------------------------------------------

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)
            self._status_counts[str(record.status)] += 1
            if record.fault:
                self._faults_injected[record.fault] += 1

    def _note_post(self) -> None:
        with self._lock:
            self.post_count += 1

    def _note_body(self, size: int) -> None:
        with self._lock:
            self.max_body_bytes_seen = max(self.max_body_bytes_seen, size)

    def _note_internal_error(self) -> None:
        with self._lock:
            self.internal_errors += 1

    def _authorized(self, header: Optional[str]) -> bool:
        if header is None:
            return False
        return hmac.compare_digest(header.encode("utf-8", "surrogateescape"),
                                   self.api_key.encode("utf-8", "surrogateescape"))

    def _forbidden(self) -> bool:
        with self._lock:
            limit = self._faults.forbid_after_drops
            return limit is not None and self.applied_drops >= limit

    @contextmanager
    def _in_flight_window(self, connection: Optional[str]) -> Iterator[bool]:
        """Yield False (and count a violation) if the connection already has a request."""
        if connection is None:
            yield True
            return
        with self._lock:
            if connection in self._in_flight:
                self.concurrency_violations += 1
                admitted = False
            else:
                self._in_flight.add(connection)
                admitted = True
        try:
            yield admitted
        finally:
            if admitted:
                with self._lock:
                    self._in_flight.discard(connection)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    # ----- request handling (inside the in-flight window) ---------------------------------

    def _serve(self, request: _Request) -> tuple[_Response, Optional[str]]:
        """The response to an authorised request, and the fault injected (if any)."""
        self._sleep(self.latency_seconds)
        route = request.route
        if route.kind == "create":
            return self._serve_create(request)
        if route.kind == "validate":
            return self._serve_validate(request), None
        if route.kind == "list":
            return self._serve_list(request), None
        return self._serve_month(request), None

    def _serve_create(self, request: _Request) -> tuple[_Response, Optional[str]]:
        """The answer to a create request, and the fault injected (if any).

        Order, as at CloudZero: the load balancer and the gateway (front faults, never cached),
        then the idempotency key (a cached answer is replayed before anything else runs), then
        the application, whose answer is cached. With cache_errors off, application faults and
        413 are answered before the key check and never remembered, as they used to be."""
        if not request.cache_errors and request.body.too_large:
            return _message(413, "Request Too Long"), None
        fault = self._next_fault()
        if fault in FRONT_FAULTS or (fault in APPLICATION_FAULTS and not request.cache_errors):
            return self._fault_response(fault), fault
        response, refused_by = self._create_drop(
            request, fault if fault in APPLICATION_FAULTS else None)
        if response.replayed and fault in APPLICATION_FAULTS:
            fault = None  # the key was checked first: the application never ran
        fault = refused_by or fault
        if fault == "slow":
            self._sleep(self._faults.slow_seconds)
        elif fault == "drop_after_apply":
            response = dataclasses.replace(_DROP, replayed=response.replayed)
        return response, fault

    def _next_fault(self) -> Optional[str]:
        """The fault for one create request: the next script name, else one random draw."""
        with self._lock:
            faults = self._faults
            name = self._script.popleft() if self._script else self._draw_fault(faults)
            if name == "ok":
                return None
            if name == "5xx" and faults.retry_after_5xx is not None:
                return "503_retry_after"
            return name

    def _draw_fault(self, faults: FaultConfig) -> Optional[str]:
        draw = self._rng.random()
        for name, rate in (("5xx", faults.rate_5xx), ("429", faults.rate_429),
                           ("slow", faults.rate_slow),
                           ("drop_after_apply", faults.rate_drop_after_apply),
                           ("front_5xx", faults.rate_front_5xx)):
            if draw < rate:
                return name
            draw -= rate
        return None

    def _fault_response(self, name: str) -> _Response:
        """The error answer of an application or front fault."""
        with self._lock:
            faults = self._faults
            if name == "5xx":
                status = self._rng.choice((500, 502))
                return _message(status, "Internal Server Error" if status == 500 else "Bad Gateway")
            if name == "503_retry_after":
                wait = DEFAULT_RETRY_AFTER if faults.retry_after_5xx is None else faults.retry_after_5xx
                return _unavailable(wait)
            if name == "429":
                return _message(429, "Too Many Requests",
                                (("Retry-After", _format_seconds(faults.retry_after_429)),))
            if name == "front_5xx":
                if faults.retry_after_front_5xx is not None:
                    return _unavailable(faults.retry_after_front_5xx)
                status = self._rng.choice((502, 503, 504))
                return _message(status, _FRONT_5XX_TEXT[status])
        raise ValueError(f"{name!r} is not an error fault")

    def _create_drop(self, request: _Request,
                     app_fault: Optional[str]) -> tuple[_Response, Optional[str]]:
        """Check the key, else run the application and remember its answer under the key.
        Returns the answer and "forbidden" when forbid_after_drops refused it."""
        key = _key_scope(request)
        digest = _body_digest(request.body.data)
        if key is not None:
            replay = self._replay(key, digest)
            if replay is not None:
                return replay, None
        refusal = self._refusal(request, app_fault) if request.cache_errors else None
        outcome, refused_by = refusal if refusal is not None else (self._prepare(request), None)
        with self._lock:
            # Another request with the same key may have finished while we were validating.
            if key is not None:
                replay = self._replay(key, digest)
                if replay is not None:
                    return replay, None
            if isinstance(outcome, _Response):
                response = outcome
            elif self._forbidden():  # checked again under the lock: parallel connections race here
                response, refused_by = _message(403, "Forbidden"), "forbidden"
                if not request.cache_errors:
                    return response, refused_by
            else:
                response = self._apply(request.namespace, request.route.connection, outcome)
            if key is not None:
                self._keys[key] = _Remembered(response, digest)
            return response, refused_by

    def _refusal(self, request: _Request,
                 app_fault: Optional[str]) -> Optional[tuple[_Response, Optional[str]]]:
        """With cache_errors: the application's answers that need no parsing, all cached."""
        if app_fault is not None:
            return self._fault_response(app_fault), None
        if request.body.too_large:
            return _message(413, "Request Too Long"), None
        if self._forbidden():
            return _message(403, "Forbidden"), "forbidden"
        if not _CONNECTION_RE.fullmatch(request.route.connection or ""):
            return _bad_connection(), None
        return None

    def _replay(self, key: tuple, digest: bytes) -> Optional[_Response]:
        with self._lock:
            remembered = self._keys.get(key)
            if remembered is None:
                return None
            self.idempotent_replays += 1
            if remembered.response.status != 200:
                self.error_replays += 1
            if remembered.digest != digest:
                self.idempotency_key_mismatches += 1
            return dataclasses.replace(remembered.response, replayed=True)

    def _prepare(self, request: _Request) -> Union[_Batch, _Response]:
        """Parse and check a create body: a batch to apply, or the 400 to send."""
        obj, problem = _parse_request_json(request)
        if problem:
            return _bad_request(problem)
        if self.mode == "throughput":
            return _throughput_batch(obj)
        errors = validate_body(obj)
        if errors:
            return _bad_request(_error_summary(errors))
        return _store_batch(obj)

    def _apply(self, namespace: Optional[str], connection: str, batch: _Batch) -> _Response:
        """Apply a batch (caller holds the lock): 200, or 400 when a monthly limit is hit."""
        conn = self._stores.get(namespace, {}).get(connection) or _Connection()
        month = conn.months.get(batch.month)
        if month is None:
            month = _StoredMonth() if self.mode == "store" else _CountedMonth()
        error = month.apply(batch)
        if error:  # nothing changed, and nothing new was created
            return _bad_request(error)
        conn.months[batch.month] = month
        self._stores.setdefault(namespace, {})[connection] = conn
        drop = {"drop_id": str(uuid.uuid4()), "month": batch.month, "row_count": batch.row_count}
        conn.drops.append(drop)
        self.applied_drops += 1
        return _ok({"connection": drop})

    def _serve_validate(self, request: _Request) -> _Response:
        if request.body.too_large:
            return _message(413, "Request Too Long")
        obj, problem = _parse_request_json(request)
        errors = [problem] if problem else validate_body(obj)
        return _ok({"connection": {"is_valid": not errors, "errors": errors}})

    def _connection(self, request: _Request) -> Optional[_Connection]:
        return self._stores.get(request.namespace, {}).get(request.route.connection)

    def _serve_list(self, request: _Request) -> _Response:
        with self._lock:
            conn = self._connection(request)
            drops = [dict(d) for d in conn.drops] if conn else []
        return _ok({"billing_drops": drops})

    def _serve_month(self, request: _Request) -> _Response:
        month = request.route.month
        with self._lock:
            conn = self._connection(request)
            stored = conn.months.get(month) if conn else None
            if stored is None or stored.row_count == 0:
                return _message(404, f"no billing data for month {month}")
            if not isinstance(stored, _StoredMonth):
                return _message(501, "throughput mode does not store rows")
            rows = [r.row for r in stored.rows]
            # Serialise under the lock: the row dicts are shared with the store.
            return _ok({"billing_drop": rows})

    # ----- control endpoints ----------------------------------------------------------------

    def _control(self, method: str, path: str, body: _Body) -> _Response:
        name = path[len(CONTROL_PREFIX):]
        if (method, name) == ("GET", "stats"):
            return _ok(self.stats())
        if (method, name) == ("POST", "reset"):
            self.reset()
            return _ok({"ok": True})
        if (method, name) == ("POST", "forget_keys"):
            self.forget_idempotency_keys()
            return _ok({"ok": True})
        if (method, name) == ("POST", "configure"):
            return self._control_configure(body)
        return _message(404, "Not Found")

    def _control_configure(self, body: _Body) -> _Response:
        try:
            settings = _loads(body.data or b"{}")
            if not isinstance(settings, dict) or set(settings) - CONFIGURE_FIELDS:
                raise ValueError('expected {"faults": {...}, "latency_seconds": x, '
                                 '"cache_errors": true|false}')
            changes = {}
            if "faults" in settings:
                changes["faults"] = FaultConfig.from_dict(settings["faults"] or {})
            if "latency_seconds" in settings:
                changes["latency_seconds"] = float(settings["latency_seconds"] or 0.0)
            if "cache_errors" in settings:
                if not isinstance(settings["cache_errors"], bool):
                    raise ValueError("cache_errors must be true or false")
                changes["cache_errors"] = settings["cache_errors"]
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            return _bad_request(f"bad configuration: {exc}")
        self.configure(**changes)
        return _ok({"ok": True})


# --------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------

_DROPS_RE = re.compile(r"([^/]+)/billing_drops(?:/([^/]+))?")


def route_request(method: str, path: str) -> _Route:
    """Map method + path (without query) to a route; route.error is set for 404/405/400."""
    if not path.startswith(API_PREFIX):
        return _Route("unknown", error=_message(404, "Not Found"))
    rest = path[len(API_PREFIX):]
    if rest == "validate_billing_drop":
        return _route_method(_Route("validate"), method, "POST")
    match = _DROPS_RE.fullmatch(rest)
    if match is None:
        return _Route("unknown", error=_message(404, "Not Found"))
    connection, month = match.groups()
    if month is not None:
        route = _Route("month", connection, month)
        if _MONTH_RE.fullmatch(month) is None:
            route = dataclasses.replace(route, error=_bad_request(
                f"month in path must be YYYY-MM, got {_show(month)}"))
        return _route_method(route, method, "GET")
    kind = "create" if method == "POST" else "list"
    return _route_method(_Route(kind, connection), method, "GET", "POST")


def _route_method(route: _Route, method: str, *allowed: str) -> _Route:
    if method not in allowed:
        return dataclasses.replace(route, error=_message(
            405, "Method Not Allowed", (("Allow", ", ".join(allowed)),)))
    return route


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Never join handler threads on close: keep-alive handlers may be idle for a long time.
    block_on_close = False

    def __init__(self, address: tuple, handler: type, emulator: Emulator) -> None:
        self.emulator = emulator
        self._open_sockets: set[socket.socket] = set()
        self._sockets_lock = threading.Lock()
        super().__init__(address, handler)

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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "AnyCostEmulator/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = IDLE_TIMEOUT_SECONDS
    server: _Server

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
        response, fault, body_size = _message(500, "Internal Server Error"), None, 0
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

    def _api(self, emulator: Emulator, method: str, path: str,
             route: _Route) -> tuple[_Response, Optional[str], int]:
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
                return _message(429, "concurrent request for connection"), None, size
            body = self._read_body(emulator.max_body_bytes)
            if body.error:
                return _bad_request(body.error), None, body.size
            response, fault = emulator._serve(self._request(method, path, route, body, cache_errors))
            return response, fault, body.size

    def _early_rejection(self, emulator: Emulator, route: _Route,
                         cache_errors: bool) -> Optional[tuple[_Response, Optional[str]]]:
        """Answers that need only the headers. Without the right API key nothing can be matched
        to an idempotency key; with cache_errors, a create request's other refusals are the
        application's, cached under its key (see Emulator._refusal)."""
        if route.error is not None and route.error.status in (404, 405):
            return route.error, None
        if not emulator._authorized(self.headers.get("Authorization")):
            return _message(403, "Forbidden"), None
        if route.kind == "create" and cache_errors:
            return None
        if emulator._forbidden():
            return _message(403, "Forbidden"), "forbidden"
        if route.connection is not None and not _CONNECTION_RE.fullmatch(route.connection):
            return _bad_connection(), None
        if route.error is not None:
            return route.error, None
        return None

    def _request(self, method: str, path: str, route: _Route, body: _Body,
                 cache_errors: bool) -> _Request:
        return _Request(
            method=method, path=path, route=route, body=body, cache_errors=cache_errors,
            namespace=self.headers.get("cloudzero-test-key") or None,
            idempotency_key=self.headers.get("cloudzero-idempotency-key") or None,
            content_type=self.headers.get("Content-Type"),
            content_encoding=self.headers.get("Content-Encoding"),
        )

    def _control(self, emulator: Emulator, method: str, path: str) -> _Response:
        body = self._read_body(DEFAULT_MAX_BODY_BYTES)
        if self.client_address[0] != LOOPBACK:
            return _message(403, "Forbidden")
        try:
            return emulator._control(method, path, body)
        except Exception:
            emulator._note_internal_error()
            traceback.print_exc()
            return _message(500, "Internal Server Error")

    # ----- body reading ---------------------------------------------------------------------

    def _read_body(self, limit: int) -> _Body:
        """Read the request body. Bodies above `limit` are drained and discarded (too_large)."""
        body = self._read_raw_body(limit)
        self.server.emulator._note_body(body.size)
        if body.error:
            self.close_connection = True
        return body

    def _read_raw_body(self, limit: int) -> _Body:
        encoding = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        if encoding:
            if encoding != "chunked":
                return _Body(None, 0, error=f"unsupported Transfer-Encoding {encoding!r}")
            return self._read_chunked(limit)
        declared = (self.headers.get("Content-Length") or "0").strip()
        if not (declared.isascii() and declared.isdigit()):
            return _Body(None, 0, error="invalid Content-Length")
        size = int(declared)
        if size > limit:
            if size > DRAIN_CAP_BYTES:
                self.close_connection = True  # too big to drain; drop the connection after 413
            else:
                self._discard(size)
            return _Body(None, size, too_large=True)
        data = self.rfile.read(size)
        if len(data) < size:
            return _Body(None, len(data), error="body shorter than Content-Length")
        return _Body(data, size)

    def _discard(self, size: int) -> None:
        while size > 0:
            chunk = self.rfile.read(min(size, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            size -= len(chunk)

    def _read_chunked(self, limit: int) -> _Body:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                return _Body(None, total, error="malformed chunked body")
            if size == 0:
                break
            total += size
            if total > DRAIN_CAP_BYTES:
                self.close_connection = True
                return _Body(None, total, too_large=True)
            chunk = self.rfile.read(size)
            if total <= limit:
                parts.append(chunk)
            self.rfile.readline(8)  # the CRLF after each chunk
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass  # trailer fields
        if total > limit:
            return _Body(None, total, too_large=True)
        return _Body(b"".join(parts), total)

    # ----- writing ------------------------------------------------------------------------

    def _send(self, response: _Response) -> None:
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


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def _parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m anycost_emulator", description="Local CloudZero AnyCost Stream emulator.")
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--host", default=LOOPBACK, help="only 127.0.0.1 is allowed")
    parser.add_argument("--api_key_env", "--api-key-env", default="CLOUDZERO_API_KEY",
                        help="environment variable holding the API key")
    parser.add_argument("--mode", choices=("store", "throughput"), default="store")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--faults", default=None, help="FaultConfig fields as a JSON object")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache_errors", "--cache-errors", type=_true_or_false, default=True,
                        metavar="true|false",
                        help="cache the first answer to an idempotency key, errors included, "
                             "as CloudZero does (default: true)")
    parser.add_argument("--port_file", "--port-file", default=None,
                        help="write the bound port to this file")
    return parser.parse_args(argv)


def _true_or_false(text: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value == "true"


def _write_port_file(path: str, port: int) -> None:
    """Atomically, so a poller never reads a half-written file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{port}\n")
    os.replace(tmp, path)


def _build_from_args(args: argparse.Namespace) -> Emulator:
    key = os.environ.get(args.api_key_env)
    if not key:
        raise ValueError(f"environment variable {args.api_key_env} is not set")
    try:
        faults = FaultConfig.from_dict(json.loads(args.faults)) if args.faults else None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--faults: {exc}") from None
    return Emulator(api_key=key, mode=args.mode, host=args.host, port=args.port,
                    latency_seconds=args.latency, faults=faults, seed=args.seed,
                    cache_errors=args.cache_errors)


def main(argv: Optional[list[str]] = None) -> int:
    args = _parse_args(argv)
    try:
        emulator = _build_from_args(args)
    except (ValueError, TypeError) as exc:
        print(f"anycost emulator: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with emulator:
        if args.port_file:
            _write_port_file(args.port_file, emulator.port)
        print(f"AnyCost emulator listening on {emulator.url}", flush=True)
        while not stop.wait(0.5):
            pass
    return 0
