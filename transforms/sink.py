"""WriteBillingDrops: the sink, keyed by connection id alone.

Each connection's bodies go out strictly one request at a time, months ascending. Different
connections overlap through a bounded thread pool (`--max_concurrent_streams`), so even the
single-process DirectRunner sends streams in parallel without relying on the runner.
The API key is read in `setup()` on the worker and lives only in memory there.
"""
import collections
import concurrent.futures
import functools
import logging
import typing

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from anycost.delivery import api_key, engine, stopping
from anycost import config as run_config, memory
from anycost.bodies import packing
from anycost.outcomes import progress
from anycost.delivery.client import AnyCostClient
from anycost.delivery.ledger import RunState
from anycost.outcomes import notices
from transforms.metering import _publish

class _SendConnections(beam.DoFn):
    """(connection_id, [(month, Chunk)]) -> a BodyResult per body, and a verification record
    (dict) per month when verifying. `config` is the write path's `WriteSettings`. A thin
    adapter: `anycost.delivery.engine` does the work, on a pool thread per connection."""

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
        self._summaries_of, self._summaries_seen = {}, None

    def start_bundle(self):
        self._pending = []
        self._tally = engine.Tally()

    def process(self, element, gate=None, summaries=()):
        connection_id, month_chunks = element
        months = collections.defaultdict(list)
        for month, chunk in month_chunks:
            months[month].append(chunk)
        plans = self._plans_of(summaries).get(connection_id, [])
        if not gate and self._config.mode != run_config.VERIFY_ONLY:  # from the plans already made
            self._progress.expect(sum(p.body_count for p in plans), sum(p.body_bytes for p in plans))
        self._pending.append(self._pool.submit(self._send_connection, connection_id, months, gate, plans))

    def finish_bundle(self):
        results = []
        for future in self._pending:
            results.extend(future.result())
        self._pending = []
        self._tally.results(results)
        _publish(self._tally)
        for result in results:
            yield WindowedValue(result, MIN_TIMESTAMP, [GlobalWindow()])

    def teardown(self):
        self._pool.shutdown(wait=True)

    def _plans_of(self, summaries):
        """The stream-month plans `_PlanDrops` made, per connection (indexed once per side input)."""
        if self._summaries_seen is not summaries:
            self._summaries_of = collections.defaultdict(list)
            for plan in summaries or ():
                self._summaries_of[plan.connection_id].append(plan)
            self._summaries_seen = summaries
        return self._summaries_of

    def _send_connection(self, connection_id, months, gate, plans):
        """Everything for one connection, on one pool thread: strictly one request at a time.
        Each month is one unit, planned when its turn comes and let go once sent."""
        config = self._config

        def plan_month(month):
            return [packing.plan_stream_month(connection_id, month, months.pop(month), config.operation,
                                              config.max_body_bytes, lazy=True)]
        units = [engine.Unit(functools.partial(plan_month, month), held=gate,
                             files={month: sorted({c.source_file for c in months[month] if c.source_file})})
                 for month in sorted(months)]
        client = None
        if config.needs_api_key and not self._key_error and not gate:
            client = AnyCostClient(config.api_url, self._key, config.connect_timeout, config.read_timeout,
                                   config.test_namespace)
        # Not an interruptible sleep: the settle wait before reading the listing must run in full.
        sending = engine.ConnectionDelivery(
            connection_id, config, client, self._key_error, self._state, observer=self._tally,
            progress=None if config.mode == run_config.VERIFY_ONLY else self._progress,
            should_stop=stopping.requested, cut_notice=notices.resource_id_notice)
        try:
            return sending.deliver(units, summaries=plans, verify=config.verify)
        finally:
            if client is not None:
                client.close()


class _WriteBillingDrops(beam.PTransform):
    """Example: `results = chunks | _WriteBillingDrops(settings, gate)`, with `WriteSettings`.

    `chunks` holds ((connection_id, month), Chunk); they are grouped by connection alone, so
    one worker owns each connection. `gate` is a singleton side input: None to send, or the
    reason nothing may be posted; the sink waits for it, so nothing goes out before the
    whole input has been validated.
    """

    def __init__(self, config, gate, summaries=None):
        super().__init__()
        self._config = config
        self._gate = gate
        self._summaries = summaries  # the stream-months' plans, for progress and verify_only

    def expand(self, chunks):
        return (chunks
                | "KeyByConnection" >> beam.Map(lambda kv: (kv[0][0], (kv[0][1], kv[1]))).with_output_types(
                    typing.Tuple[str, typing.Any])
                | "GroupByConnection" >> beam.GroupByKey()
                | "Send" >> beam.ParDo(_SendConnections(self._config), gate=beam.pvalue.AsSingleton(self._gate),
                                       summaries=self._summary_list(chunks)))

    def _summary_list(self, chunks):
        if self._summaries is None:
            return beam.pvalue.AsList(chunks.pipeline | "NoSummaries" >> beam.Create([]))
        return beam.pvalue.AsList(self._summaries)
