"""The emulator: CloudZero's application behind the HTTP server, and its inspectable state.

It implements the contract in docs/anycost-api.md in its strictest reading:

* raw-key ``Authorization`` (403), 5,000,000-byte bodies (413), CBF row validation (400, see
  ``rules``), ``sum`` / ``replace_drop`` / ``replace_hourly`` per (connection, month) and the
  monthly limits (``store``), ``cloudzero-test-key`` namespaces;
* ``cloudzero-idempotency-key``: like CloudZero, the first answer to a key is cached whatever it
  is and replayed to every later request with that key (``keys``); ``cache_errors=False``
  remembers only the answers to bodies the application parsed (200 and 400);
* one request in flight per connection id: a second one gets 429 and is counted in
  ``concurrency_violations``;
* reproducible fault injection on create requests (``faults``).

``mode="throughput"`` skips per-row validation and does not store rows; it only counts rows and
the exact Decimal sum of ``cost/cost`` per UTC hour, so a million-row benchmark stays cheap.
With ``parse_processes=n`` it parses up to n bodies at once on n processes, as CloudZero serves
parallel requests (``parse_pool``).

In-process use::

    with Emulator(api_key="k") as emu:
        requests.post(f"{emu.url}/v2/connections/billing/anycost/c1/billing_drops", ...)
        emu.totals()

From the command line: ``python -m anycost_emulator --help``.
"""

from __future__ import annotations

import collections
import hmac
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Union

from anycost_emulator import keys
from anycost_emulator.faults import APPLICATION_FAULTS, FRONT_FAULTS, FaultConfig, FaultSource
from anycost_emulator.parse_pool import ParsePool, count_body
from anycost_emulator.rules import error_summary, valid_connection_id, validate_body
from anycost_emulator.server import LOOPBACK, Server
from anycost_emulator.store import (
    Batch, Store, StoredMonth, money, preload_batch, store_batch)
from anycost_emulator.wire import (
    Request, RequestRecord, Response, bad_connection, bad_request, json_body_error, message, ok,
    parse_request_json)

DEFAULT_MAX_BODY_BYTES = 5_000_000


class Emulator:
    """The AnyCost Stream emulator: an HTTP server on 127.0.0.1 plus its inspectable state."""

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
        parse_processes: int = 1,
    ) -> None:
        if not api_key:
            raise ValueError("api_key must be a non-empty string")
        if mode not in ("store", "throughput"):
            raise ValueError("mode must be 'store' or 'throughput'")
        if isinstance(parse_processes, bool) or not isinstance(parse_processes, int) or parse_processes < 1:
            raise ValueError("parse_processes must be a whole number of at least 1")
        if parse_processes > 1 and mode != "throughput":
            raise ValueError("parse_processes serves throughput mode only (store mode keeps the rows here)")
        if host != LOOPBACK:
            raise ValueError(f"the emulator only binds {LOOPBACK}")
        self.api_key = api_key
        self.mode = mode
        self.host = host
        self.max_body_bytes = max_body_bytes
        self.seed = seed
        self._requested_port = port
        self._lock = threading.RLock()
        self._faults = FaultSource(faults, seed)
        self.latency_seconds = latency_seconds
        # Like CloudZero: the first answer to an idempotency key is cached whatever its status.
        # False: only answers to bodies the application parsed (200, 400) are remembered.
        self.cache_errors = bool(cache_errors)
        # Throughput mode: up to this many bodies parsed at once, on as many processes (see parse_pool).
        self.parse_processes = parse_processes
        self._parse_pool: Optional[ParsePool] = None
        self._server: Optional[Server] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._in_flight: set[str] = set()
        self._clear_state()

    # ----- lifecycle --------------------------------------------------------------------------

    def start(self) -> "Emulator":
        if self._server is not None:
            return self
        self._stopping = threading.Event()
        if self.parse_processes > 1 and self._parse_pool is None:
            self._parse_pool = ParsePool(self.parse_processes)
        self._server = Server((self.host, self._requested_port), self)
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
        pool, self._parse_pool = self._parse_pool, None
        if pool is not None:
            pool.close()

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

    @property
    def idempotent_replays(self) -> int:
        return self._keys.replays

    @property
    def error_replays(self) -> int:
        """Replays of a cached answer that was not a 200."""
        return self._keys.error_replays

    @property
    def idempotency_key_mismatches(self) -> int:
        """Replays whose body differed from the one first sent with the key."""
        return self._keys.mismatches

    def totals(self, namespace: Optional[str] = None) -> dict:
        """{connection: {month: {"rows": int, "cost": Decimal, "bodies": int}}}.

        rows and cost describe what the month holds now (preloaded rows included); bodies counts
        every body applied to it by a request.
        """
        with self._lock:
            return self._store.totals(namespace)

    def rows(self, connection: str, month: str, namespace: Optional[str] = None) -> list[dict]:
        """Copies of the rows a month holds, in upload order. Always [] in throughput mode;
        preloaded rows are counted, not kept, so they are not among them."""
        with self._lock:
            stored = self._store.month(namespace, connection, month)
            if not isinstance(stored, StoredMonth):
                return []
            return [dict(row) for row in stored.sent_rows()]

    def drops(self, connection: str, namespace: Optional[str] = None) -> list[dict]:
        """What ``GET .../{connection}/billing_drops`` lists: every drop applied, in order."""
        with self._lock:
            return self._store.drops(namespace, connection)

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
                "faults": self._faults.config.to_dict(),
                "latency_seconds": self.latency_seconds,
                "cache_errors": self.cache_errors,
                "totals": self._json_totals(None),
                "namespaces": {ns: self._json_totals(ns) for ns in self._store.named_namespaces()},
            }

    def _json_totals(self, namespace: Optional[str]) -> dict:
        return {
            conn: {month: {**t, "cost": money(t["cost"])} for month, t in months.items()}
            for conn, months in self._store.totals(namespace).items()
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
                self._faults.configure(faults)
            if latency_seconds is not self._UNSET:
                self.latency_seconds = float(latency_seconds or 0.0)

    def forget_idempotency_keys(self) -> None:
        with self._lock:
            self._keys.forget()

    def reset(self) -> None:
        """Clear data, keys, counters and the request log. Faults, latency and error caching
        stay configured; the random generator is re-seeded and the fault script re-armed."""
        with self._lock:
            self._clear_state()

    def preload(self, connection: str, month: str, rows: int, cost: str = "0",
                namespace: Optional[str] = None, nbytes: int = 0) -> dict:
        """Make a month already hold ``rows`` more rows, as if an earlier run had summed them.

        Cheap at any size: the rows are counted, not built. They count towards the monthly row
        limit (and ``nbytes`` towards the byte limit), ``cost`` (decimal text) is added to the
        month's total, and ``GET .../billing_drops`` lists them as one drop. They sit in the
        month's first UTC hour, are not returned by ``rows()`` or the read-month call, and are
        neither a body nor an applied drop in the counters. Returns the drop record; raises
        ValueError for a bad argument or when the month would pass a limit.
        """
        if not valid_connection_id(connection):
            raise ValueError(f"connection must match [A-Za-z0-9_-]{{1,128}}, got {connection!r}")
        batch = preload_batch(month, rows, cost, nbytes)
        with self._lock:
            drop = self._store.apply(namespace, connection, batch, body=False)
        if isinstance(drop, str):
            raise ValueError(drop)
        return drop

    def _clear_state(self) -> None:
        self._store = Store(self.mode)
        self._keys = keys.KeyCache()
        self._requests: list[RequestRecord] = []
        self._status_counts: collections.Counter = collections.Counter()
        self._faults_injected: collections.Counter = collections.Counter()
        self._faults.restart()
        self.post_count = 0
        self.applied_drops = 0
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
            limit = self._faults.config.forbid_after_drops
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

    def _serve(self, request: Request) -> tuple[Response, Optional[str]]:
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

    def _serve_create(self, request: Request) -> tuple[Response, Optional[str]]:
        """The answer to a create request, and the fault injected (if any).

        Order, as at CloudZero: the load balancer and the gateway (front faults, never cached),
        then the idempotency key (a cached answer is replayed before anything else runs), then
        the application, whose answer is cached. With cache_errors off, application faults and
        413 are answered before the key check and never remembered, as they used to be."""
        if not request.cache_errors and request.body.too_large:
            return message(413, "Request Too Long"), None
        fault = self._faults.next_fault()
        if fault in FRONT_FAULTS or (fault in APPLICATION_FAULTS and not request.cache_errors):
            return self._faults.response(fault), fault
        response, refused_by = self._create_drop(
            request, fault if fault in APPLICATION_FAULTS else None)
        if response.replayed and fault in APPLICATION_FAULTS:
            fault = None  # the key was checked first: the application never ran
        fault = refused_by or fault
        if fault == "slow":
            self._sleep(self._faults.config.slow_seconds)
        elif fault == "drop_after_apply":
            response = Response(0, drop_connection=True, replayed=response.replayed)
        return response, fault

    def _create_drop(self, request: Request,
                     app_fault: Optional[str]) -> tuple[Response, Optional[str]]:
        """Check the key, else run the application and remember its answer under the key.
        Returns the answer and "forbidden" when forbid_after_drops refused it."""
        scope = keys.key_scope(request)
        digest = keys.body_digest(request.body.data)
        if scope is not None:
            replay = self._replay(scope, digest)
            if replay is not None:
                return replay, None
        refusal = self._refusal(request, app_fault) if request.cache_errors else None
        outcome, refused_by = refusal if refusal is not None else (self._prepare(request), None)
        with self._lock:
            # Another request with the same key may have finished while we were validating.
            if scope is not None:
                replay = self._keys.replay(scope, digest)
                if replay is not None:
                    return replay, None
            if isinstance(outcome, Response):
                response = outcome
            elif self._forbidden():  # checked again under the lock: parallel connections race here
                response, refused_by = message(403, "Forbidden"), "forbidden"
                if not request.cache_errors:
                    return response, refused_by
            else:
                response = self._apply(request.namespace, request.route.connection, outcome)
            if scope is not None:
                self._keys.remember(scope, response, digest)
            return response, refused_by

    def _replay(self, scope: tuple, digest: bytes) -> Optional[Response]:
        with self._lock:
            return self._keys.replay(scope, digest)

    def _refusal(self, request: Request,
                 app_fault: Optional[str]) -> Optional[tuple[Response, Optional[str]]]:
        """With cache_errors: the application's answers that need no parsing, all cached."""
        if app_fault is not None:
            return self._faults.response(app_fault), None
        if request.body.too_large:
            return message(413, "Request Too Long"), None
        if self._forbidden():
            return message(403, "Forbidden"), "forbidden"
        if not valid_connection_id(request.route.connection):
            return bad_connection(), None
        return None

    def _prepare(self, request: Request) -> Union[Batch, Response]:
        """Parse and check a create body: a batch to apply, or the 400 to send."""
        if self.mode == "throughput":
            problem = json_body_error(request)
            if problem:
                return bad_request(problem)
            pool = self._parse_pool
            batch = pool.count(request.body.data) if pool is not None else count_body(request.body.data)
            return bad_request(batch) if isinstance(batch, str) else batch
        obj, problem = parse_request_json(request)
        if problem:
            return bad_request(problem)
        errors = validate_body(obj)
        if errors:
            return bad_request(error_summary(errors))
        return store_batch(obj)

    def _apply(self, namespace: Optional[str], connection: str, batch: Batch) -> Response:
        """Apply a batch (caller holds the lock): 200, or 400 when a monthly limit is hit."""
        drop = self._store.apply(namespace, connection, batch)
        if isinstance(drop, str):  # nothing changed, and nothing new was created
            return bad_request(drop)
        self.applied_drops += 1
        return ok({"connection": drop})

    def _serve_validate(self, request: Request) -> Response:
        if request.body.too_large:
            return message(413, "Request Too Long")
        obj, problem = parse_request_json(request)
        errors = [problem] if problem else validate_body(obj)
        return ok({"connection": {"is_valid": not errors, "errors": errors}})

    def _serve_list(self, request: Request) -> Response:
        with self._lock:
            drops = self._store.drops(request.namespace, request.route.connection)
        return ok({"billing_drops": drops})

    def _serve_month(self, request: Request) -> Response:
        month = request.route.month
        with self._lock:
            stored = self._store.month(request.namespace, request.route.connection, month)
            if stored is None or stored.row_count == 0:
                return message(404, f"no billing data for month {month}")
            if not isinstance(stored, StoredMonth):
                return message(501, "throughput mode does not store rows")
            # Serialise under the lock: the row dicts are shared with the store.
            return ok({"billing_drop": stored.sent_rows()})
