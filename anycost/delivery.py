"""Send one connection's bodies in order, one request at a time, retrying safely.

This is the sink's logic without Beam: months ascending, bodies in order, never more than
one request in flight (a body waiting for its retry holds the connection), the same
idempotency key on every attempt, and once a body fails for good the later bodies of the
connection are not sent, because they would land out of order.
"""
import dataclasses
import logging
import random
import time
from typing import List, Optional

from anycost.retry import Outcome, RetryPolicy

LOG = logging.getLogger("cloudzero.delivery")

DELIVERED = "delivered"
ALREADY_DELIVERED = "already_delivered"
FAILED = "failed"
NOT_SENT = "not_sent"
DRY_RUN = "dry_run"
VALID = "valid"
INVALID = "invalid"


@dataclasses.dataclass(frozen=True)
class BodyResult:
    connection_id: str
    month: str
    seq: int
    count: int
    rows: int
    bytes: int
    status: str
    attempts: int = 0
    drop_id: Optional[str] = None
    message: str = ""
    idempotency_key: str = ""


def result_for(body, status, **details):
    return BodyResult(body.connection_id, body.month, body.seq, body.count, body.row_count,
                      body.byte_count, status, idempotency_key=body.idempotency_key, **details)


class Observer:
    """Hooks for metrics; the Beam sink counts with them. Defaults do nothing."""

    def attempt(self, outcome: Outcome, seconds: float):
        pass

    def retry(self, body, decision):
        pass


def _in_order(bodies):
    """Pass bodies through, refusing any that would go out of (month, seq) order."""
    last = None
    for body in bodies:
        position = (body.month, body.seq)
        if last is not None and position <= last:
            raise ValueError(f"{body.describe()} comes after {last}: bodies must be sent in order")
        last = position
        yield body


class ConnectionSender:
    """Delivers the bodies of one connection, strictly one request at a time."""

    def __init__(self, client, policy: RetryPolicy, state=None, observer=None,
                 sleep=time.sleep, clock=time.monotonic, rng=None):
        self._client = client
        self._policy = policy
        self._state = state
        self._observer = observer or Observer()
        self._sleep, self._clock = sleep, clock
        self._rng = rng or random.Random()

    def send(self, bodies) -> List[BodyResult]:
        """Deliver `bodies`, given in (month, seq) order; they may be produced lazily, one
        month at a time, so that a connection's data need not be in memory all at once."""
        results, failure, done = [], None, None
        for body in _in_order(bodies):
            if done is None:
                done = self._state.delivered_keys(body.connection_id) if self._state else set()
            # A body an earlier run delivered is reported as such even after a failure:
            # it is in CloudZero, and skipping it sends nothing out of order.
            if body.idempotency_key in done:
                results.append(result_for(body, ALREADY_DELIVERED, message="recorded in --state_path"))
            elif failure:
                results.append(result_for(body, NOT_SENT, message=f"not sent: {failure} failed earlier"))
            else:
                result = self._deliver(body)
                results.append(result)
                if result.status != DELIVERED:
                    failure = body.describe()
        return results

    def validate(self, bodies) -> List[BodyResult]:
        """Ask the validate endpoint about each body; nothing is stored by CloudZero."""
        results = []
        for body in _in_order(bodies):
            outcome, attempts, reason = self._with_retries(body, lambda: self._client.validate_drop(body.body))
            if not outcome.ok:
                results.append(result_for(body, FAILED, attempts=attempts, message=reason))
                continue
            verdict = (outcome.payload or {}).get("connection", {})
            valid = bool(verdict.get("is_valid"))
            errors = "; ".join(str(e) for e in verdict.get("errors") or [])[:2000]
            results.append(result_for(body, VALID if valid else INVALID, attempts=attempts, message=errors))
            LOG.info("%s: %s %s", body.describe(), "valid" if valid else "INVALID", errors)
        return results

    def verify(self, summaries):
        """Read each month back and compare it with the input (see `anycost.verify`)."""
        from anycost import verify  # pylint: disable=import-outside-toplevel
        records = []
        for summary in sorted(summaries, key=lambda s: s.month):
            if summary.refused:
                continue
            outcome, _, reason = self._with_retries(
                summary.connection_id + " " + summary.month,
                lambda: self._client.read_month(summary.connection_id, summary.month))
            record = verify.check(summary, outcome, reason)
            LOG.info("verify %s %s: %s %s", summary.connection_id, summary.month, record["status"],
                     record["message"])
            records.append(record)
        return records

    def _deliver(self, body):
        outcome, attempts, reason = self._with_retries(
            body, lambda: self._client.create_drop(body.connection_id, body.body, body.idempotency_key))
        if not outcome.ok:
            LOG.error("%s failed: %s", body.describe(), reason)
            return result_for(body, FAILED, attempts=attempts, message=reason)
        drop_id = ((outcome.payload or {}).get("connection") or {}).get("drop_id")
        if self._state:
            self._state.record(body, drop_id, attempts)
        LOG.info("%s delivered: %d rows, %d bytes, drop_id %s", body.describe(), body.row_count,
                 body.byte_count, drop_id)
        return result_for(body, DELIVERED, attempts=attempts, drop_id=drop_id)

    def _with_retries(self, body, call):
        """Call until success or the policy gives up: (last outcome, attempts, the reason).
        The caller's idempotency key is the same on every attempt."""
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            before = self._clock()
            outcome = call()
            self._observer.attempt(outcome, self._clock() - before)
            decision = self._policy.decide(attempt, self._clock() - started, outcome, self._rng)
            if not decision.retry:
                return outcome, attempt, decision.reason
            self._observer.retry(body, decision)
            what = body if isinstance(body, str) else body.describe()
            LOG.warning("%s: attempt %d: %s; retrying in %.2f s with the same idempotency key",
                        what, attempt, decision.reason, decision.delay)
            self._sleep(decision.delay)
