"""Send one connection's bodies in order, one request at a time, retrying safely.

This is the sink's logic without Beam: months ascending, bodies in order, never more than
one request in flight (a body waiting for its retry holds the connection), and once a body
fails for good the later bodies of the connection are not sent, because they would land
out of order. Each attempt's idempotency key comes from `anycost.delivery.retry.KeyGeneration`:
the same key while any attempt under it may have been applied, the next key of the body's
fixed sequence after definite errors only. With `sum`, months that would pass CloudZero's
monthly row limit given what it already holds are refused before anything of them is sent.
With a ledger, the connection's lease is held while its bodies go out, so two runs never
send one connection at once, and a body left in doubt is resolved against CloudZero's
listing of drops (`anycost.delivery.reconcile`) instead of staying stuck.
"""
import contextlib
import itertools
import logging
import random
import time
from typing import Dict, List

from anycost import cbf
from anycost.config import setting_on
from anycost.delivery.results import (ALREADY_DELIVERED, DELIVERED, FAILED, INVALID, NOT_SENT, REFUSED, VALID,
                                      BodyResult, result_for)
from anycost.delivery import lease as leases, reconcile
from anycost.delivery.retry import Decision, KeyGeneration, Outcome, RetryPolicy, moves_key
from anycost.delivery.stopping import STOPPED_BY_USER
from anycost.words import plural

LOG = logging.getLogger("cloudzero.delivery")

def rows_held(payload) -> Dict[str, int]:
    """Rows CloudZero holds per month, from the answer to `GET .../billing_drops`."""
    drops = _drops(payload)
    if drops is None:
        raise ValueError("the answer has no billing_drops list")
    held = {}
    for drop in drops:
        month = str(drop.get("month", ""))[:7]
        held[month] = held.get(month, 0) + int(drop.get("row_count") or 0)
    return held


def _drops(payload):
    """The drops of a `GET .../billing_drops` answer, or None when it has no list."""
    drops = payload.get("billing_drops") if isinstance(payload, dict) else None
    if not isinstance(drops, list) or not all(isinstance(d, dict) for d in drops):
        return None  # not the documented shape: nothing can be counted from it
    return drops


def month_limit_refusal(month, held, adding, limit=cbf.MAX_ROWS_PER_STREAM_MONTH):
    """Why adding `adding` rows to a month holding `held` is refused, or None."""
    if held + adding <= limit:
        return None
    return (f"CloudZero already holds {held:,} rows for {month}; these {adding:,} more would make "
            f"{held + adding:,}, over the {limit:,} rows a stream-month may hold. Nothing of this "
            "month was sent")


# Why a body without a ledger may fail on an answer that a retry cannot change.
NO_LEDGER_HINT = ("; CloudZero replays the first answer to an idempotency key, errors included, and "
                  "without a delivery ledger (state_path) a body never moves to a new key, because only "
                  "the ledger can tell that a new key will not apply the body twice. Run again with a "
                  "state path: it resumes where this run stopped")


def _undecided_advice(body, state_path):
    command = (f"python -m pipeline.resolve --state_path {state_path} --connection_id {body.connection_id} "
               f"--body {body.idempotency_key}")
    return (f". Check the drops of {body.month} in CloudZero (GET .../{body.connection_id}/billing_drops). If one "
            f"of them is this body's {plural(body.row_count, 'row')}, record it: `{command} --applied DROP_ID`; if none "
            f"is, record that: `{command} --not_applied`. Then run this command again: it finishes the job")


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


def sender_for(client, settings, state=None, observer=None, **kwargs):
    """The sender a run's `WriteSettings` ask for: its retry policy, lease wait and settle time."""
    from anycost.delivery.retry import policy_for  # pylint: disable=import-outside-toplevel
    return ConnectionSender(client, policy_for(settings), state=state, observer=observer,
                            lease_wait_seconds=settings.lease_wait_seconds,
                            settle_seconds=settings.read_timeout, read_listing=not settings.skip_month_check,
                            **kwargs)


class ConnectionSender:
    """Delivers the bodies of one connection, strictly one request at a time.

    `settle_seconds`: how long after a request went out CloudZero is assumed to have finished
    it (the read timeout); a body in doubt is only reconciled against the listing after that.
    `read_listing=False` (the key may not read drops) keeps no listing, so doubt stays unresolved."""

    def __init__(self, client, policy: RetryPolicy, state=None, observer=None,
                 sleep=time.sleep, clock=time.monotonic, rng=None, wall_clock=time.time,
                 lease_wait_seconds=leases.DEFAULT_WAIT_SECONDS, lease_seconds=leases.LEASE_SECONDS,
                 settle_seconds=30.0, read_listing=True, should_stop=None):
        self._client = client
        self._should_stop = should_stop or (lambda: False)  # checked between bodies (Ctrl-C)
        self._policy = policy
        self._state = state
        self._observer = observer or Observer()
        self._sleep, self._clock, self._wall_clock = sleep, clock, wall_clock
        self._rng = rng or random.Random()
        self._lease_wait, self._lease_seconds, self._settle = lease_wait_seconds, lease_seconds, settle_seconds
        self._held = {}  # connection id -> LeaseKeeper, while this sender holds its lease
        self._listed = {}  # connection id -> the drops CloudZero listed under the lease
        self._noted = set()  # connections whose drops_seen this run has settled
        self._files = {}  # (connection, month) -> the files its rows came from, for the ledger
        self._read_listing = read_listing
        self._unanswered_at = None  # clock time of the latest attempt that may still be applying

    def note_source_files(self, connection_id, month, files):
        """The files a month's rows came from: each delivered body's record keeps them."""
        self._files[(connection_id, month)] = list(files)

    @contextlib.contextmanager
    def holding(self, connection_id):
        """Hold the connection's lease (with a ledger) for the block; re-entrant. Raises
        `lease.LeaseBusy` when another run keeps it past the wait."""
        if self._state is None or connection_id in self._held:
            yield self._held.get(connection_id)
            return
        lease = leases.ConnectionLease(self._state.lease_store(connection_id), connection_id,
                                       seconds=self._lease_seconds, log=LOG.warning, face=self._policy.face)
        lease.acquire(self._lease_wait)
        # Whatever an earlier holder had in flight went out before this moment.
        self._unanswered_at = self._clock()
        with leases.LeaseKeeper(lease) as keeper:
            self._held[connection_id] = keeper
            try:
                yield keeper
            finally:
                del self._held[connection_id]

    def send(self, bodies) -> List[BodyResult]:
        """Deliver `bodies`, given in (month, seq) order; they may be produced lazily, one
        month at a time, so that a connection's data need not be in memory all at once."""
        bodies = _in_order(bodies)
        first = next(bodies, None)
        if first is None:
            return []
        bodies = itertools.chain([first], bodies)
        try:
            with self.holding(first.connection_id) as keeper:
                return self._send_held(bodies, keeper)
        except leases.LeaseBusy as busy:
            LOG.error("%s", busy)
            return [result_for(body, NOT_SENT, message=str(busy)) for body in bodies]

    def _send_held(self, bodies, keeper):
        results, failure, ledger = [], None, None
        for body in bodies:
            if ledger is None and self._state:
                ledger = self._state.load(body.connection_id)
            # A body an earlier run delivered is reported as such even after a failure:
            # it is in CloudZero, and skipping it sends nothing out of order.
            if ledger is not None and ledger.is_delivered(body):
                results.append(result_for(body, ALREADY_DELIVERED, message="recorded in --state_path"))
            elif failure:
                results.append(result_for(body, NOT_SENT, message=f"not sent: {failure}"))
            elif keeper is not None and keeper.lost:
                failure = "this run lost the connection's lease to another run, so it stopped sending"
                results.append(result_for(body, NOT_SENT, message=f"not sent: {failure}"))
            elif self._should_stop():
                results.append(result_for(body, NOT_SENT, message=STOPPED_BY_USER))
            else:
                if self._state:
                    self._note_drops_seen(body.connection_id)
                result = self._deliver(body, self._first_generation(body, ledger))
                results.append(result)
                if result.status != DELIVERED:
                    failure = f"{body.describe()} failed earlier"
        return results

    def _note_drops_seen(self, connection_id):
        """Before this run's first request for the connection, keep what CloudZero holds, unless
        a body is in doubt (then the listing from before it must stay)."""
        if connection_id in self._noted or not self._read_listing:
            return
        self._noted.add(connection_id)
        if self._state.in_doubt(connection_id):
            return
        listed = self._listed.pop(connection_id, None)
        if listed is None:
            listed, reason = self._list_drops(connection_id)
            if listed is None:
                LOG.warning("%s: could not list CloudZero's drops (%s); a body left in doubt by a crash "
                            "could not be resolved from the listing", connection_id, reason)
                return
        self._state.note_drops_seen(connection_id, [str(d.get("drop_id")) for d in listed])

    def _list_drops(self, connection_id):
        """(the connection's drops as CloudZero lists them, None), or (None, why not)."""
        outcome, _, reason = self._with_retries(f"{connection_id} billing_drops",
                                                lambda: self._client.list_drops(connection_id))
        listed = _drops(outcome.payload) if outcome.ok else None
        return listed, (reason if listed is None else None)

    def rows_held(self, connection_id):
        """({month: rows} CloudZero holds for the connection, None), or (None, why not)."""
        outcome, _, reason = self._with_retries(f"{connection_id} billing_drops",
                                                lambda: self._client.list_drops(connection_id))
        if outcome.ok:
            try:
                held = rows_held(outcome.payload)
                if connection_id in self._held:  # listed under the lease: good for drops_seen too
                    self._listed.setdefault(connection_id, _drops(outcome.payload))
                return held, None
            except (ValueError, TypeError, AttributeError) as err:
                reason = str(err)
        hint = ""
        if outcome.status is not None:  # CloudZero answered: the key may lack read scope
            hint = (f"; if the key may not read billing drops, "
                    f"{setting_on('skip_month_check', self._policy.face)} sends without this check")
        return None, (f"could not read the rows CloudZero holds ({reason}), so no month of "
                      f"{connection_id} was sent{hint}")

    def validate(self, bodies) -> List[BodyResult]:
        """Ask the validate endpoint about each body; nothing is stored by CloudZero."""
        results = []
        for body in _in_order(bodies):
            if self._should_stop():
                results.append(result_for(body, NOT_SENT, message=STOPPED_BY_USER))
                continue
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
        """Read each month back and compare it with the input (see `anycost.delivery.verify`)."""
        from anycost.delivery import verify# pylint: disable=import-outside-toplevel
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

    def _first_generation(self, body, ledger):
        """Where an earlier run left the body's keys; a body never tried starts at 0.

        Without a ledger a body never leaves generation 0. A key that only ever met errors
        from in front of CloudZero's application (a load balancer's 503) holds nothing in
        CloudZero's cache, so a rerun that walked the sequence again would have it applied
        a second time, after an earlier run had moved on and got a later key applied. Only
        the ledger remembers which keys a body has used, so only with it may a body move."""
        if self._state is None:
            return KeyGeneration(limit=1)
        if ledger is not None and ledger.has_progress(body):
            progress = self._state.progress(body)
            if progress is None:  # a record that cannot be read: assume the worst
                return KeyGeneration(0, in_doubt=True)
            return KeyGeneration(progress[0], in_doubt=progress[1])
        return KeyGeneration()

    def _deliver(self, body, generation: KeyGeneration):
        """Send `body` until it is accepted or the policy gives up. Before the first attempt
        under each key generation, the ledger notes it as possibly sent (write-ahead). A body in
        doubt whose key answers with a definite error is reconciled against the listing."""
        started, attempt, moves = self._clock(), 0, []
        if self._state:
            self._state.record_progress(body, generation.number, True)
        while True:
            attempt += 1
            key = body.key_for(generation.number)
            sent_at = self._clock()
            outcome = self._attempt(lambda: self._client.create_drop(body.connection_id, body.body, key))
            if outcome.may_have_been_applied:
                self._unanswered_at = sent_at
            following, moved = generation.after(outcome)
            if self._state and generation.in_doubt and moves_key(outcome.status) \
                    and generation.number + 1 < generation.limit:
                verdict = self._reconcile(body)
                if verdict.kind == reconcile.APPLIED:
                    self._state.record(body, verdict.drop_id, attempt, generation.number,
                                       files=self._files.get((body.connection_id, body.month)))
                    LOG.warning("%s", verdict.reason)
                    return result_for(body, DELIVERED, drop_id=verdict.drop_id, attempts=attempt,
                                      idempotency_key=key, generation=generation.number,
                                      key_moves=tuple(moves), message=verdict.reason)
                if verdict.kind == reconcile.UNDECIDED:
                    LOG.error("%s failed: %s", body.describe(), verdict.reason)
                    return result_for(body, FAILED, message=verdict.reason + _undecided_advice(body, self._state.root),
                                      attempts=attempt, idempotency_key=key, generation=generation.number,
                                      key_moves=tuple(moves))
                following, moved = KeyGeneration(generation.number + 1, limit=generation.limit), verdict.reason
            decision = self._decide(attempt, started, outcome)
            if not decision.retry:
                break
            self._observer.retry(body, decision)
            if moved:
                moves.append(f"attempt {attempt + 1} used key generation {following.number}: {moved}")
                if self._state:
                    self._state.record_progress(body, following.number, True)
            LOG.warning("%s: attempt %d: %s; retrying in %.2f s %s", body.describe(), attempt, decision.reason,
                        decision.delay, f"with key generation {following.number} ({moved})" if moved
                        else "with the same idempotency key")
            generation = following
            self._sleep(decision.delay)
            if self._should_stop():  # a stop during the wait ends the body as if it had run out of time
                decision = Decision(False, reason=f"stopped by the user while waiting to retry: {decision.reason}")
                break
        details = dict(attempts=attempt, idempotency_key=key, generation=generation.number,
                       key_moves=tuple(moves))
        if not outcome.ok:
            # Where a rerun resumes: a definite refusal proves this key did nothing, and CloudZero
            # would replay it, so the rerun takes the next key; a key that may have been applied stays.
            if self._state:
                self._state.record_progress(body, following.number, following.in_doubt)
            reason = decision.reason
            if self._state is None and RetryPolicy.is_retryable(outcome) and outcome.status is not None:
                reason += NO_LEDGER_HINT
            LOG.error("%s failed: %s", body.describe(), reason)
            return result_for(body, FAILED, message=reason, **details)
        drop_id = ((outcome.payload or {}).get("connection") or {}).get("drop_id")
        if self._state:
            self._state.record(body, drop_id, attempt, generation.number,
                               files=self._files.get((body.connection_id, body.month)))
        LOG.info("%s delivered: %d rows, %d bytes, drop_id %s%s", body.describe(), body.row_count,
                 body.byte_count, drop_id, f", key generation {generation.number}" if generation.number else "")
        return result_for(body, DELIVERED, drop_id=drop_id, **details)

    def _reconcile(self, body) -> reconcile.Verdict:
        """Whether `body`, in doubt, was applied: CloudZero's listing against the ledger, read
        once every request that may still be applying has had `settle_seconds` to finish."""
        if self._unanswered_at is not None:
            wait = self._unanswered_at + self._settle - self._clock()
            if wait > 0:
                LOG.info("%s: in doubt; waiting %.1f s for any request still applying before reading "
                         "CloudZero's listing", body.describe(), wait)
                self._sleep(wait)
        seen = self._state.drops_seen(body.connection_id)
        if seen is None:
            return reconcile.decide(body, [], None, set())
        listed, reason = self._list_drops(body.connection_id)
        if listed is None:
            return reconcile.Verdict(reconcile.UNDECIDED, reason=(
                f"{body.describe()} was in doubt, and CloudZero's listing of drops could not be read ({reason})"))
        records = self._state.delivered_records(body.connection_id)
        return reconcile.decide(
            body, listed, seen,
            {str(r["drop_id"]) for r in records if r.get("drop_id")},
            bodies_in_doubt=max(1, len(self._state.in_doubt(body.connection_id))),
            unidentified_deliveries=sum(1 for r in records if not r.get("drop_id")))

    def _attempt(self, call):
        before = self._clock()
        outcome = call()
        self._observer.attempt(outcome, self._clock() - before)
        return outcome

    def _decide(self, attempt, started, outcome, read_only=False):
        return self._policy.decide(attempt, self._clock() - started, outcome, now=self._wall_clock(),
                                   rng=self._rng, read_only=read_only)

    def _with_retries(self, what, call):
        """Call until success or the policy gives up: (last outcome, attempts, the reason).
        For reads and validation, which change nothing, so any retry is safe."""
        started, attempt = self._clock(), 0
        while True:
            attempt += 1
            outcome = self._attempt(call)
            decision = self._decide(attempt, started, outcome, read_only=True)
            if not decision.retry:
                return outcome, attempt, decision.reason
            self._observer.retry(what, decision)
            LOG.warning("%s: attempt %d: %s; retrying in %.2f s", what if isinstance(what, str) else what.describe(),
                        attempt, decision.reason, decision.delay)
            self._sleep(decision.delay)
