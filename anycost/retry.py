"""When to try a request again, and how long to wait: one value object, tested alone.

Modelled on urllib3's `Retry`: which outcomes are retryable, the backoff, `Retry-After`
and the limits all sit here instead of being spread over the call sites. The caller
reuses the body's idempotency key on every attempt, so a retry of a request that may
already have been applied is never counted twice. No Beam, no HTTP library.
"""
import dataclasses
import datetime as dt
import email.utils
import random
import time
from typing import Any, Optional

NEVER_RETRY = frozenset({400, 401, 403, 404, 413})


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one attempt gave: an HTTP status, or an error before any status arrived."""
    status: Optional[int] = None
    error: Optional[str] = None  # "timeout" or "connection" when no status came back
    retry_after: Optional[str] = None  # the raw Retry-After header
    message: str = ""  # the server's message, or the error's
    payload: Any = None  # the parsed JSON answer, when there was one

    @property
    def ok(self):
        return self.status is not None and 200 <= self.status < 300


@dataclasses.dataclass(frozen=True)
class Decision:
    retry: bool
    delay: float = 0.0
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Retry timeouts, connection errors, 429 and 5xx with full-jitter exponential backoff."""
    max_attempts: int = 8
    max_total_seconds: float = 600.0
    backoff_base: float = 0.5
    backoff_max: float = 60.0

    def decide(self, attempt, elapsed, outcome: Outcome, rng: random.Random = random) -> Decision:
        """After `attempt` attempts taking `elapsed` seconds in all, try again or give up."""
        if outcome.ok:
            return Decision(False, reason="delivered")
        if not self.is_retryable(outcome):
            return Decision(False, reason=explain(outcome))
        if attempt >= self.max_attempts:
            return Decision(False, reason=f"gave up after {attempt} attempts: {explain(outcome)}")
        delay = parse_retry_after(outcome.retry_after, time.time())
        if delay is None:
            delay = rng.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1)))
        if elapsed + delay > self.max_total_seconds:
            return Decision(False, reason=(f"gave up after {attempt} attempts and {elapsed:.0f} s "
                                           f"(--max_retry_seconds {self.max_total_seconds:g}): "
                                           f"{explain(outcome)}"))
        return Decision(True, delay=delay, reason=explain(outcome))

    @staticmethod
    def is_retryable(outcome: Outcome):
        if outcome.status is None:
            return outcome.error in ("timeout", "connection")
        if outcome.status in NEVER_RETRY:
            return False
        return outcome.status in (408, 429) or outcome.status >= 500


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


def explain(outcome: Outcome):
    """A message a person can act on; it never holds the API key."""
    server = f": {outcome.message}" if outcome.message else ""
    if outcome.status is None:
        if outcome.error == "timeout":
            return f"no answer before the read timeout (the drop may have been applied){server}"
        return f"connection failed{server}"
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
