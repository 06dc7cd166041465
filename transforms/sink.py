"""WriteBillingDrops: the sink, keyed by connection id alone.

Each connection's bodies go out strictly one request at a time, months ascending. Different
connections overlap through a bounded thread pool (`--max_concurrent_streams`), so even the
single-process DirectRunner sends streams in parallel without relying on the runner.
The API key is read in `setup()` on the worker and lives only in memory there.
"""
import collections
import concurrent.futures
import dataclasses
import logging
import threading
import typing

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from anycost.delivery import api_key, changed_rows, lease, stopping
from anycost import config as run_config, delivery, memory
from anycost.inputs import normalise
from anycost.bodies import packing
from anycost.outcomes import progress
from anycost.delivery.client import AnyCostClient
from anycost.delivery.ledger import RunState
from anycost.outcomes import notices

LOG = logging.getLogger("cloudzero.delivery")

class _Tally(delivery.Observer):
    """Counts from the sending threads, applied to Beam metrics on the bundle's thread
    (Beam's metric container is thread-local)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts = collections.Counter()
        self.latencies_ms = []

    def attempt(self, outcome, seconds):
        kind = f"http_{outcome.status // 100}xx" if outcome.status else f"http_{outcome.error}"
        with self._lock:
            self.counts[kind] += 1
            self.latencies_ms.append(int(seconds * 1000))

    def retry(self, body, decision):
        with self._lock:
            self.counts["retries"] += 1


def _write_dry_run_body(output_dir, body):
    path = FileSystems.join(output_dir, body.connection_id, body.month, f"{body.seq:05d}.json")
    with FileSystems.create(path) as handle:
        handle.write(body.body)
    return path


class _SendConnections(beam.DoFn):
    """(connection_id, [(month, Chunk)]) -> a BodyResult per body, and a verification record
    (dict) per month when verifying. `config` is the write path's `WriteSettings`."""

    def __init__(self, config: run_config.WriteSettings):
        self._config = config

    def setup(self):
        memory.return_big_buffers()  # each month's rows and bodies are freed once sent
        self._key, self._key_error = None, None
        if self._config.needs_api_key:
            try:
                self._key = api_key.load(self._config.api_key_env, self._config.api_key_secret)
            except api_key.ApiKeyError as err:
                self._key_error = str(err)
        self._pool = concurrent.futures.ThreadPoolExecutor(self._config.max_concurrent_streams,
                                                           thread_name_prefix="anycost-stream")
        self._state = RunState(self._config.state_path) if self._config.state_path else None
        self._progress = progress.SendProgress(logging.getLogger("cloudzero").info)

    def start_bundle(self):
        self._pending = []
        self._tally = _Tally()

    def process(self, element, gate=None):
        connection_id, month_chunks = element
        months = collections.defaultdict(list)
        for month, chunk in month_chunks:
            months[month].append(chunk)
        if not gate and self._config.mode != run_config.VERIFY_ONLY:
            self._expect(connection_id, months)
        self._pending.append(self._pool.submit(self._send_connection, connection_id, months, gate))

    def finish_bundle(self):
        results = []
        for future in self._pending:
            results.extend(future.result())
        self._pending = []
        for name, count in self._tally.counts.items():
            Metrics.counter("cloudzero", name).inc(count)
        latency = Metrics.distribution("cloudzero", "request_latency_ms")
        for value in self._tally.latencies_ms:
            latency.update(value)
        sent = [r for r in results if isinstance(r, delivery.BodyResult) and r.status == delivery.DELIVERED]
        Metrics.counter("cloudzero", "bodies_sent").inc(len(sent))
        Metrics.counter("cloudzero", "bytes_sent").inc(sum(r.bytes for r in sent))
        body_bytes = Metrics.distribution("cloudzero", "body_bytes")
        for result in sent:
            body_bytes.update(result.bytes)
        for result in results:
            yield WindowedValue(result, MIN_TIMESTAMP, [GlobalWindow()])

    def teardown(self):
        self._pool.shutdown(wait=True)

    def _expect(self, connection_id, months):
        """Count the connection's bodies for the progress lines, from row lengths only."""
        plans = [packing.plan_stream_month(connection_id, month, chunks, self._config.operation,
                                           self._config.max_body_bytes, with_bodies=False)
                 for month, chunks in months.items()]
        self._progress.expect(sum(p.body_count for p in plans), sum(p.body_bytes for p in plans))

    def _bodies(self, connection_id, months, plans, held=None, refused=None, delivered=None, sender=None):
        """Months ascending, bodies in order, built one month at a time (each month's chunks
        are let go once its bodies exist); each month's plan is noted in `plans`. With
        `held` (rows CloudZero holds per month), a month that would pass the monthly row
        limit is not sent: its results go to `refused`. With `delivered` (the ledger's
        records), a `sum` month whose files were delivered before as other bodies is refused
        too (`anycost.delivery.changed_rows`), and `sender` records each month's files."""
        for month in sorted(months):
            chunks = months.pop(month)
            files = sorted({chunk.source_file for chunk in chunks if chunk.source_file})
            plan = packing.plan_stream_month(connection_id, month, chunks, self._config.operation,
                                             self._config.max_body_bytes)
            plans.append(dataclasses.replace(plan, bodies=[]))  # its bodies go once sent, not with the connection
            if sender is not None:
                sender.note_source_files(connection_id, month, files)
            if plan.resource_ids_cut:
                LOG.warning("%s %s: %s", connection_id, month,
                            notices.resource_id_notice(plan.resource_ids_cut, plan.resource_id_example))
            refusal = held is not None and delivery.month_limit_refusal(month, held.get(month, 0), plan.row_count)
            if not refusal and delivered is not None:
                refusal = changed_rows.refusal(month, plan.bodies, files, delivered, self._config.face)
            if refusal:
                LOG.error("%s %s refused: %s", connection_id, month, refusal)
                refused.extend(delivery.result_for(b, delivery.REFUSED, message=refusal) for b in plan.bodies)
                continue
            yield from plan.bodies

    def _send_connection(self, connection_id, months, gate):
        """Everything for one connection, on one pool thread: strictly one request at a time."""
        config = self._config
        plans = []
        bodies = self._bodies(connection_id, months, plans)
        if gate:
            return [delivery.result_for(b, delivery.NOT_SENT, message=gate) for b in bodies]
        if config.mode != run_config.VERIFY_ONLY:
            bodies = self._progress.track(bodies)
        if config.mode == run_config.DRY_RUN:
            return [delivery.result_for(b, delivery.DRY_RUN, message=_write_dry_run_body(config.output_dir, b))
                    for b in bodies]
        if self._key_error:
            return [delivery.result_for(b, delivery.FAILED, message=self._key_error) for b in bodies]
        client = AnyCostClient(config.api_url, self._key, config.connect_timeout, config.read_timeout,
                               config.test_namespace)
        try:
            # Not an interruptible sleep: the settle wait before reading the listing must run in full.
            sender = delivery.sender_for(client, config, state=self._state, observer=self._tally,
                                         should_stop=stopping.requested)
            if config.mode == run_config.VALIDATE_ONLY:
                return sender.validate(bodies)
            if config.mode == run_config.VERIFY_ONLY:  # the months' totals only: no bodies built
                return sender.verify([
                    packing.plan_stream_month(connection_id, month, months[month], config.operation,
                                              config.max_body_bytes, with_bodies=False)
                    for month in sorted(months)])
            try:
                with sender.holding(connection_id):  # what CloudZero holds is read under the lease
                    results = self._send_held(sender, connection_id, months, plans, bodies)
            except lease.LeaseBusy as busy:
                LOG.error("%s", busy)
                return [delivery.result_for(b, delivery.NOT_SENT, message=str(busy)) for b in bodies]
            if config.verify:
                results += sender.verify(plans)
            return results
        finally:
            client.close()

    def _send_held(self, sender, connection_id, months, plans, bodies):
        """Under the lease: what CloudZero and the ledger hold decide which months may go."""
        refused, held = [], None
        if self._config.checks_month_limits:
            held, problem = sender.rows_held(connection_id)
            if problem:
                LOG.error("%s", problem)
                return [delivery.result_for(b, delivery.FAILED, message=problem) for b in bodies]
        delivered = None
        if self._state is not None and self._config.operation == "sum":
            delivered = self._state.delivered_records(connection_id)
        bodies = self._progress.track(self._bodies(connection_id, months, plans, held, refused, delivered, sender))
        return sender.send(bodies) + refused


class _WriteBillingDrops(beam.PTransform):
    """Example: `results = chunks | _WriteBillingDrops(settings, gate)`, with `WriteSettings`.

    `chunks` holds ((connection_id, month), Chunk); they are grouped by connection alone, so
    one worker owns each connection. `gate` is a singleton side input: None to send, or the
    reason nothing may be posted; the sink waits for it, so nothing goes out before the
    whole input has been validated.
    """

    def __init__(self, config, gate):
        super().__init__()
        self._config = config
        self._gate = gate

    def expand(self, chunks):
        return (chunks
                | "KeyByConnection" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1]))).with_output_types(
                    typing.Tuple[str, typing.Any])
                | "GroupByConnection" >> beam.GroupByKey()
                | "Send" >> beam.ParDo(_SendConnections(self._config),
                                       gate=beam.pvalue.AsSingleton(self._gate)))
