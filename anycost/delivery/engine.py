"""One connection's delivery, the same for every face: the bounded sink, the streaming sender
and `--watch` hand their units here and only add Beam around it.

A connection's units go in, in send order: its months (bounded input), one hour pane
(streaming) or one file (`--watch`). Each unit is planned once, when its turn comes, so a
bounded connection's months are built one at a time. Then the limits: a unit held back
(the gate, the reject limit), a plan CloudZero's limits or the `replace_*` constraints
refuse, the monthly row limit against what CloudZero already holds (`sum`: read once per
connection under its lease, then kept up to date as bodies are delivered, so later units
count earlier ones) and the changed-rows refusal (`anycost.delivery.changed_rows`, for
units that name their files). Then the mode: dry run, validate, verify, or send under the
ledger and the lease. The result is one `BodyResult` per body (and one per refused plan).
No Beam transforms; dry-run bodies are written through Beam's FileSystems, like the ledger.
"""
import collections
import dataclasses
import logging
import threading
from typing import Callable, List, NamedTuple, Optional

from apache_beam.io.filesystems import FileSystems

from anycost import config as run_config
from anycost.delivery import changed_rows, lease as leases
from anycost.delivery.results import (ALREADY_DELIVERED, DELIVERED, DRY_RUN, FAILED, NOT_SENT, REFUSED, VALID,
                                      BodyResult, result_for)
from anycost.delivery.sender import Observer, month_limit_refusal, sender_for

LOG = logging.getLogger("cloudzero.delivery")

# Statuses that mean nothing went wrong with the body: the streaming face's `delivered` output.
GOOD = frozenset({DELIVERED, ALREADY_DELIVERED, DRY_RUN, VALID})


class Unit(NamedTuple):
    """One unit of a connection's input, in send order.

    `plan()` gives the unit's stream-month plans with bodies, months ascending; it is called
    once, when the unit's turn comes. `label` names the unit in its dry-run files ("" for a
    whole month). `held`: why the unit is held back whole, or None. `files`: month -> the
    files its rows came from, for the ledger and the changed-rows check (None: not known).
    `refused_prefix`: a plan refused by CloudZero's limits gets a `failed` result with this
    prefix; None when the face reports refused months itself (bounded: from its plans)."""
    plan: Callable[[], list]
    label: str = ""
    held: Optional[str] = None
    files: Optional[dict] = None
    refused_prefix: Optional[str] = None


def dry_run_path(output_dir, body, label=""):
    """Where a dry run writes `body`: `<connection>/<month>/00001.json` for a month's bodies,
    `<label>-00001.json` for a smaller unit's, so units of one month never collide and a
    month's files sort in send order."""
    name = f"{label}-{body.seq:05d}.json" if label else f"{body.seq:05d}.json"
    return FileSystems.join(output_dir, body.connection_id, body.month, name)


def write_dry_run(output_dir, body, label=""):
    path = dry_run_path(output_dir, body, label)
    with FileSystems.create(path) as handle:
        handle.write(body.body)
    return path


class Tally(Observer):
    """Counts for metrics, from any thread; a Beam adapter applies `drain()` to Beam's
    metrics on its bundle's thread (Beam's metric container is thread-local)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._reset()

    def _reset(self):
        self.counts = collections.Counter(bodies_sent=0, bytes_sent=0)
        self.latencies_ms, self.body_bytes = [], []

    def attempt(self, outcome, seconds):
        kind = f"http_{outcome.status // 100}xx" if outcome.status else f"http_{outcome.error}"
        with self._lock:
            self.counts[kind] += 1
            self.latencies_ms.append(int(seconds * 1000))

    def retry(self, body, decision):
        with self._lock:
            self.counts["retries"] += 1

    def results(self, results):
        """Count the bodies delivered among `results`."""
        with self._lock:
            for result in results:
                if isinstance(result, BodyResult) and result.status == DELIVERED:
                    self.counts["bodies_sent"] += 1
                    self.counts["bytes_sent"] += result.bytes
                    self.body_bytes.append(result.bytes)

    def drain(self):
        """(counts, request latencies in ms, delivered body sizes) since the last drain."""
        with self._lock:
            taken = (dict(self.counts), self.latencies_ms, self.body_bytes)
            self._reset()
        return taken


class ConnectionDelivery:
    """Delivers the units of one connection, strictly one request at a time.

    Keep one per connection for as long as its units come (the streaming and watch faces
    keep it across panes and files): what CloudZero holds is read once, under the lease,
    and counts every body this object delivered since. `client` is None in a dry run;
    `key_error` says why the API key could not be read. `progress` (optional) has
    `track(bodies)`, as `anycost.outcomes.progress.SendProgress`; `cut_notice(count, example)`
    (optional) words the warning for a plan whose resource ids CloudZero will cut."""

    def __init__(self, connection_id, settings, client=None, key_error=None, state=None, observer=None,
                 progress=None, should_stop=None, cut_notice=None):
        self._connection_id = connection_id
        self._settings = settings
        self._client, self._key_error, self._state = client, key_error, state
        self._observer, self._progress, self._should_stop = observer, progress, should_stop
        self._cut_notice = cut_notice
        self._sender = None
        self._held = None  # month -> rows CloudZero holds, once read under the lease

    def sender(self):
        if self._sender is None:
            self._sender = sender_for(self._client, self._settings, state=self._state, observer=self._observer,
                                      should_stop=self._should_stop)
        return self._sender

    def deliver(self, units, summaries=None, verify=False) -> list:
        """Results for `units` (given in send order). `summaries`: the months' plans without
        bodies, for `verify_only`; `verify`: read each sent month back afterwards."""
        units, s = list(units), self._settings
        early, plans = [], []
        if s.mode == run_config.VERIFY_ONLY and not self._key_error:
            return self.sender().verify(summaries or [])
        if all(unit.held for unit in units):  # nothing may go out: no request, no lease
            return list(self._bodies(units, early, plans)) + early
        if s.mode == run_config.DRY_RUN:
            return [result_for(body, DRY_RUN, message=write_dry_run(s.output_dir, body, unit.label))
                    for unit, body in self._pairs(units, early, plans)] + early
        if self._key_error:
            return [result_for(body, FAILED, message=self._key_error)
                    for body in self._tracked(self._bodies(units, early, plans))] + early
        if s.mode == run_config.VALIDATE_ONLY:
            return self.sender().validate(self._tracked(self._bodies(units, early, plans))) + early
        sender = self.sender()
        try:
            with sender.holding(self._connection_id):  # what CloudZero holds is read under the lease
                problem = self._read_held(sender)
                if problem:
                    return [result_for(body, FAILED, message=problem)
                            for body in self._tracked(self._bodies(units, early, plans))] + early
                sent = sender.send(self._tracked(self._bodies(units, early, plans, self._refusal(sender))))
        except leases.LeaseBusy as busy:
            LOG.error("%s", busy)
            return [result_for(body, NOT_SENT, message=str(busy))
                    for body in self._tracked(self._bodies(units, early, plans))] + early
        if self._held is not None:
            for result in sent:
                if result.status == DELIVERED:
                    self._held[result.month] = self._held.get(result.month, 0) + result.rows
        if verify:
            sent += sender.verify(plans)
        return sent + early

    def _read_held(self, sender):
        """Read what CloudZero holds, once, when the month check applies; why not, or None."""
        if not self._settings.checks_month_limits or self._held is not None:
            return None
        held, problem = sender.rows_held(self._connection_id)
        if problem:
            LOG.error("%s", problem)
            return problem
        self._held = held
        return None

    def _refusal(self, sender):
        """The check each plan passes before its bodies go out: (unit, plan) -> reason or None."""
        delivered = None
        if self._state is not None and self._settings.operation == "sum":
            delivered = self._state.delivered_records(self._connection_id)

        def refusal(unit, plan):
            if unit.files is not None:
                sender.note_source_files(self._connection_id, plan.month, unit.files.get(plan.month, ()))
            if self._held is not None:
                reason = month_limit_refusal(plan.month, self._held.get(plan.month, 0), plan.row_count)
                if reason:
                    return reason
            if delivered is not None and unit.files is not None:
                return changed_rows.refusal(plan.month, plan.bodies, unit.files.get(plan.month, ()), delivered,
                                            self._settings.face)
            return None
        return refusal

    def _tracked(self, bodies):
        return self._progress.track(bodies) if self._progress is not None else bodies

    def _bodies(self, units, early, plans, refusal=None):
        return (body for _, body in self._pairs(units, early, plans, refusal))

    def _pairs(self, units, early, plans, refusal=None):
        """(unit, body) in send order, each unit planned once; the results of what may not go
        (refused plans, held units, refused months) are added to `early`, and each plan,
        without its bodies, to `plans`."""
        for unit in units:
            for plan in unit.plan():
                plans.append(dataclasses.replace(plan, bodies=[]))
                if plan.resource_ids_cut and self._cut_notice is not None:
                    LOG.warning("%s %s: %s", self._connection_id, plan.month,
                                self._cut_notice(plan.resource_ids_cut, plan.resource_id_example))
                if plan.refused:
                    if unit.refused_prefix is not None:
                        early.append(BodyResult(self._connection_id, plan.month, 0, 0, plan.row_count, 0, FAILED,
                                                message=unit.refused_prefix + plan.refused))
                    continue
                if unit.held:
                    early.extend(result_for(body, NOT_SENT, message=unit.held) for body in plan.bodies)
                    continue
                reason = refusal(unit, plan) if refusal is not None else None
                if reason:
                    LOG.error("%s %s refused: %s", self._connection_id, plan.month, reason)
                    early.extend(result_for(body, REFUSED, message=reason) for body in plan.bodies)
                    continue
                for body in plan.bodies:
                    yield unit, body


class Deliveries(dict):
    """A worker's `ConnectionDelivery` per connection, made on first use and kept across units,
    so that what CloudZero holds is read once per connection (the streaming and --watch senders)."""

    def __init__(self, settings, client, key_error, state, observer):
        super().__init__()
        self._made_with = (settings, client, key_error, state, observer)

    def __missing__(self, connection_id):
        settings, client, key_error, state, observer = self._made_with
        made = self[connection_id] = ConnectionDelivery(connection_id, settings, client, key_error, state,
                                                        observer=observer)
        return made
