"""When to try a request again, how long to wait, and under which key: value objects, tested alone.

Modelled on urllib3's `Retry`: which outcomes are retryable, the backoff, `Retry-After`
and the limits all sit in `RetryPolicy` instead of being spread over the call sites.
`KeyGeneration` decides the idempotency key of a body's next attempt: CloudZero replays
the first answer to a key, errors included, so a body whose every attempt under its key
got a definite error moves on to the next key of a fixed sequence, and a body with any
attempt that may have been applied never does. No Beam, no HTTP library.
"""
import dataclasses
import datetime as dt
import email.utils
import random
from typing import Any, Optional, Tuple

from anycost.config import CLI, setting_value
from anycost.words import plural

NEVER_RETRY = frozenset({400, 401, 403, 404, 413})

# Why an attempt got no HTTP status. The first four mean nothing reached the server.
CONNECT = "connect"  # refused, unreachable, or no TCP connection within --connect_timeout
DNS = "dns"  # the host name did not resolve
TLS_HANDSHAKE = "tls_handshake"  # the TLS handshake failed or timed out before the request went out
TLS_CERTIFICATE = "tls_certificate"  # the server's certificate was not accepted: never retried
TIMEOUT = "timeout"  # no answer within --read_timeout after the request was sent
CONNECTION = "connection"  # the connection broke after (part of) the request was sent

NOTHING_SENT = frozenset({CONNECT, DNS, TLS_HANDSHAKE, TLS_CERTIFICATE})
MAY_HAVE_BEEN_APPLIED = frozenset({TIMEOUT, CONNECTION})
RETRYABLE_ERRORS = frozenset({CONNECT, DNS, TLS_HANDSHAKE, TIMEOUT, CONNECTION})

# Keys of one body: generation 0, 1, ... A body reaches a new generation only after a
# definite error under the previous one, so more than a few means CloudZero itself is down;
# the bound keeps a rerun's walk over replayed errors short.
MAX_KEY_GENERATIONS = 16


def moves_key(status):
    """Whether an answer proves the request under its key did nothing, so the body may move on:
    CloudZero's definite refusals and its application's errors. Any other status (429, 409, 408,
    or one CloudZero does not document) may be a refusal because another request for the
    connection is in flight, possibly applying this very body under this very key."""
    return status is not None and (status in NEVER_RETRY or 500 <= status <= 599)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one attempt gave: an HTTP status, or an error before any status arrived."""
    status: Optional[int] = None
    error: Optional[str] = None  # one of the kinds above when no status came back
    retry_after: Optional[str] = None  # the raw Retry-After header
    message: str = ""  # the server's message, or a short description of the error
    payload: Any = None  # the parsed JSON answer, when there was one

    @property
    def ok(self):
        return self.status is not None and 200 <= self.status < 300

    @property
    def may_have_been_applied(self):
        """No answer although the request went out: the server may have applied it."""
        return self.status is None and self.error not in NOTHING_SENT


@dataclasses.dataclass(frozen=True)
class Decision:
    retry: bool
    delay: float = 0.0
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Retry connect failures, timeouts, resets, 408, 429 and 5xx with full-jitter backoff.

    The total time is bounded: no retry starts unless its wait plus one whole attempt
    (`attempt_seconds`, the connect plus the read timeout) still fits in
    `max_total_seconds`, so an endpoint that never answers ends the body in bounded time.
    """
    max_attempts: int = 8
    max_total_seconds: float = 90.0
    backoff_base: float = 0.5
    backoff_max: float = 60.0
    attempt_seconds: float = 0.0
    face: str = CLI  # whom the reasons name the settings for (anycost.config.setting_name)

    def decide(self, attempt, elapsed, outcome: Outcome, *, now, rng: random.Random = random,
               read_only=False) -> Decision:
        """After `attempt` attempts taking `elapsed` seconds in all, try again or give up.
        `now` is the wall-clock time (seconds since the epoch), for Retry-After dates;
        `read_only` requests (reads, validation) change nothing, and the reason says so."""
        if outcome.ok:
            return Decision(False, reason="delivered")
        if not self.is_retryable(outcome):
            return Decision(False, reason=explain(outcome, read_only))
        if attempt >= self.max_attempts:
            return Decision(False, reason=(f"gave up after {plural(attempt, 'attempt')} in {elapsed:.0f} s "
                                           f"({setting_value('max_attempts', self.max_attempts, self.face)}): "
                                           f"{explain(outcome, read_only)}"))
        delay = parse_retry_after(outcome.retry_after, now)
        if delay is None:
            delay = rng.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))
        if elapsed + delay + self.attempt_seconds > self.max_total_seconds:
            return Decision(False, reason=(f"gave up after {plural(attempt, 'attempt')} in {elapsed:.0f} s "
                                           f"(another would pass "
                                           f"{setting_value('max_retry_seconds', f'{self.max_total_seconds:g}', self.face)}): "
                                           f"{explain(outcome, read_only)}"))
        return Decision(True, delay=delay, reason=explain(outcome, read_only))

    @staticmethod
    def is_retryable(outcome: Outcome):
        if outcome.status is None:
            return outcome.error in RETRYABLE_ERRORS
        if outcome.status in NEVER_RETRY:
            return False
        return outcome.status in (408, 429) or outcome.status >= 500


@dataclasses.dataclass(frozen=True)
class KeyGeneration:
    """Which key of a body's fixed sequence the next attempt uses, and whether it may move.

    `in_doubt`: some attempt under this generation went unanswered after sending (or an
    earlier run may have sent it), so it may have been applied; the body then keeps this
    key until it succeeds or the run gives up. Otherwise a definite HTTP error moves the
    body to the next generation, because CloudZero would replay that error to every retry
    under the same key. A failure to connect sends nothing and leaves the key as it is:
    nothing is cached under it, so moving would only lengthen a rerun's walk. A refusal that
    may be about concurrency (429, 409, any status `moves_key` does not know) keeps the key too.
    """
    number: int = 0
    in_doubt: bool = False
    limit: int = MAX_KEY_GENERATIONS

    def after(self, outcome: Outcome) -> Tuple["KeyGeneration", Optional[str]]:
        """The generation for the next attempt, and why it moved (None when it stays)."""
        if outcome.ok or outcome.status is None and not outcome.may_have_been_applied:
            return self, None
        if outcome.may_have_been_applied:
            return dataclasses.replace(self, in_doubt=True), None
        if self.in_doubt or not moves_key(outcome.status) or self.number + 1 >= self.limit:
            return self, None
        what = f"HTTP {outcome.status}"
        reason = (f"every attempt under key generation {self.number} got a definite error ({what}), "
                  "which CloudZero would replay to every retry with that key")
        return dataclasses.replace(self, number=self.number + 1), reason


def policy_for(settings) -> RetryPolicy:
    """The retry policy of a run's `WriteSettings`: a whole attempt is its connect plus read timeout."""
    return RetryPolicy(settings.max_attempts, settings.max_retry_seconds,
                       attempt_seconds=settings.connect_timeout + settings.read_timeout, face=settings.face)


def parse_retry_after(value, now):
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # `-0000`: a time in UTC from an unknown zone, never local time
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, when.timestamp() - now)


def _detail(outcome):
    return f" ({outcome.message})" if outcome.message else ""


def explain(outcome: Outcome, read_only=False):
    """One short line a person can act on; it never holds the API key. For a `read_only`
    request nothing can have been applied, so the line does not say so."""
    server = f": {outcome.message}" if outcome.message else ""
    if outcome.status is None:
        detail = _detail(outcome)
        applied = "" if read_only else "; it may have been applied"
        return {
            CONNECT: f"could not connect{detail}; nothing was sent",
            DNS: f"the host name did not resolve{detail}; nothing was sent. Check --api_url",
            TLS_HANDSHAKE: f"the TLS handshake did not complete{detail}; nothing was sent",
            TLS_CERTIFICATE: (f"the server's TLS certificate was not accepted{detail}; nothing was sent. "
                              "Behind a TLS-inspecting proxy or with a private CA, set REQUESTS_CA_BUNDLE "
                              "to that CA bundle file; check --api_url"),
            TIMEOUT: f"no answer{detail} after the request was sent{applied}",
            CONNECTION: f"the connection broke{detail} after the request was sent{applied}",
        }.get(outcome.error, f"the request failed{detail}")
    status = outcome.status
    if status in (401, 403):
        return (f"HTTP {status}: CloudZero refused the API key, or the key lacks the "
                f"billing-drop scope; check the key your --api_key_env or --api_key_secret names{server}")
    if status == 404:
        return f"HTTP 404: not found; check --api_url and the connection id{server}"
    if status == 413:
        return f"HTTP 413: the body is larger than CloudZero accepts; lower --max_body_bytes{server}"
    if status == 400:
        return f"HTTP 400: CloudZero rejected the body{server}"
    if status == 429:
        return f"HTTP 429: too many requests{server}"
    return f"HTTP {status}{server}"
