"""WatchAndSend: `--watch` as a streaming job over arriving files.

    PeriodicImpulse (every poll_interval, until the timeout)
      -> ListFiles: every file the patterns match now, with its identity (path, size, mtime)
      -> _DiscoverFiles (one key, cheap: new files only, each numbered in the order found)
      -> SpreadFiles (a Reshuffle, so that files go to different workers; not on FnApiRunner)
      -> _ReadFiles (stateless, in parallel: each file read whole and gated alone, several at
           once per bundle; its dead letter and record written; its rows written to a chunk
           file per connection, so only references go on)
      -> _NumberFiles (one key, small: back in file order; per connection a gap-free sequence)
      -> _SendFiles (keyed by connection: one request in flight; files sent in the order found;
           a file's chunk file deleted once its record is written)

A fresh job sees every file that already matches: only the ledger (`state_path`) keeps a
restarted watcher from sending them again, because each body's key names its file.
Each file's outcome is written as a small JSON record under `results_dir` (one object per
file and connection, overwritten whole on a replay), from which the command line builds
the usual report when the job ends. `fileio.MatchContinuously` is not used: offline it
ignores the poll interval and misses files added later (see docs/command-line.md, "Watching
for new files").
"""
import dataclasses
import json
import logging
import os
import time
import typing
from concurrent import futures

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import userstate
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.utils.timestamp import MAX_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from anycost import in_order
from anycost.bodies import file_order, file_units
from anycost.delivery import engine
from anycost.delivery.ledger import RunState
from anycost.delivery.results import from_record
from anycost.config import RowSettings
from anycost.inputs import chunk_files, dead_letter
from transforms.chunk_files import _chunk_folder
from transforms.metering import _publish
from transforms.streaming import _connect

LOG = logging.getLogger("cloudzero.watch")
FILES_DIR, UNITS_DIR = "files", "units"


class _FileUnit(typing.NamedTuple):
    """One file's rows for one connection, numbered in the order files were found."""
    seq: int
    identity: file_units.FileIdentity
    months: dict  # month -> [ChunkRef], the rows in the file's chunk file for this connection
    held: typing.Optional[str]

    @property
    def chunk_paths(self):
        return sorted({ref.path for refs in self.months.values() for ref in refs if ref.path})


def _list_files(patterns):
    """Every file the patterns match now, oldest first; a pattern matching nothing is fine."""
    found = {}
    for pattern in patterns:
        try:
            matches = FileSystems.match([pattern])[0].metadata_list
        except Exception:  # pylint: disable=broad-except  # nothing matches yet: files come later
            continue
        for metadata in matches:
            found[metadata.path] = file_units.FileIdentity(metadata.path, int(metadata.size_in_bytes),
                                                           float(metadata.last_updated_in_seconds))
    return sorted(found.values(), key=lambda identity: (identity.mtime, identity.path))


def _write_json(path, record):
    with FileSystems.create(path) as handle:
        handle.write(json.dumps(record, sort_keys=True).encode())


class _FileFound(typing.NamedTuple):
    """A new file and its number: gap-free, in the order files were found."""
    number: int
    identity: file_units.FileIdentity


class _FileRead(typing.NamedTuple):
    """What reading one file gives the numbering: its rows per connection, maybe none at all."""
    number: int
    identity: file_units.FileIdentity
    parts: dict  # connection -> month -> [ChunkRef]; empty for a file with no rows
    held: typing.Optional[str]


@beam.typehints.with_output_types(_FileFound)
class _DiscoverFiles(beam.DoFn):
    """("watch", [FileIdentity]) -> _FileFound for each file not seen before.

    One key, and cheap: only identities are compared and numbered, nothing is read. A
    replayed bundle starts from the state its first attempt started from, so the same
    listing gives the same numbers."""
    SEEN = userstate.BagStateSpec("seen", beam.coders.StrUtf8Coder())
    NEXT = userstate.ReadModifyWriteStateSpec("next", beam.coders.PickleCoder())

    def process(self, element, seen_state=beam.DoFn.StateParam(SEEN), next_state=beam.DoFn.StateParam(NEXT)):
        _, identities = element
        seen = set(seen_state.read())
        number = next_state.read() or 0
        for identity in identities:
            if identity.text in seen:
                continue
            seen.add(identity.text)
            seen_state.add(identity.text)
            yield _FileFound(number, identity)
            number += 1
        next_state.write(number)


@beam.typehints.with_output_types(typing.Tuple[str, typing.Any])
class _ReadFiles(beam.DoFn):
    """_FileFound -> ("watch", _FileRead), every file, one with no rows too.

    Stateless, so files spread over workers; inside a bundle, up to `threads` files are read
    at once. Each file's dead letter and record go to fixed paths named by its identity, so a
    replayed bundle rewrites them, never adds to them."""

    def __init__(self, settings: RowSettings, max_rejected_rows, dead_letter_prefix, results_dir, chunk_folder,
                 threads=None):
        # decided here, where the pipeline is built: a local folder's filesystem is this machine's
        self._settings = dataclasses.replace(settings, compress_rows=chunk_files.compress_rows(chunk_folder))
        self._limit = max_rejected_rows
        self._dead_letter = dead_letter_prefix
        self._results = results_dir
        self._chunk_folder = chunk_folder
        self._threads = threads or max(2, os.cpu_count() or 2)

    def setup(self):
        self._pool = futures.ThreadPoolExecutor(self._threads, thread_name_prefix="watch-read")

    def teardown(self):
        self._pool.shutdown(wait=False)

    def start_bundle(self):
        self._reads = in_order.InOrder(in_flight=self._threads, pool=self._pool)

    def process(self, found, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam):
        for (when, where), read in self._reads.submit(self._read, found, note=(timestamp, window)):
            yield WindowedValue(("watch", read), when, [where])

    def finish_bundle(self):
        for (when, where), read in self._reads.drain():
            yield WindowedValue(("watch", read), when, [where])

    def _read(self, found):
        identity = found.identity
        written = {}  # connection -> this file's chunk file for it (new names, so a replay writes afresh)

        def keep(connection_id, chunk):
            if connection_id not in written:
                written[connection_id] = chunk_files.ChunkFile(self._chunk_folder)
            return written[connection_id].add(chunk)
        try:
            read = file_units.read_file(identity, self._settings, self._limit, keep=keep)
        finally:
            for chunk_file in written.values():
                chunk_file.close()  # before any reference to it leaves this step
        LOG.info("found %s: %d rows, %d rejected%s", identity.path, read.rows_read, len(read.rejects),
                 f"; held back: {read.held}" if read.held else "")
        dead_letter = self._write_dead_letter(read)
        _write_json(FileSystems.join(self._results, FILES_DIR, identity.digest + ".json"), {
            "path": identity.path, "identity": identity.text, "rows_read": read.rows_read,
            "rows_rejected": len(read.rejects), "held": read.held, "file_error": read.file_error,
            "dead_letter": dead_letter, "connections": sorted(read.chunks)})
        parts = {connection_id: dict(months) for connection_id, months in read.chunks.items()}
        return _FileRead(found.number, identity, parts, read.held)

    def _write_dead_letter(self, read):
        if not read.rejects:
            return None
        path = f"{self._dead_letter}-{read.identity.digest}.jsonl"
        with FileSystems.create(path) as handle:
            for record in read.rejects:
                handle.write((dead_letter.dumps_reject(record) + "\n").encode())
        return path


@beam.typehints.with_output_types(typing.Tuple[str, typing.Any])
class _NumberFiles(beam.DoFn):
    """("watch", _FileRead) -> (connection, _FileUnit), in the order the files were found.

    One key, and small: it only orders. A file read before an earlier one waits in state
    until the earlier one arrives; then each connection's files get their gap-free `seq`
    (anycost.bodies.file_order)."""
    ORDER = userstate.ReadModifyWriteStateSpec("order", beam.coders.PickleCoder())
    WAITING = userstate.BagStateSpec("waiting", beam.coders.PickleCoder())

    def process(self, element, order_state=beam.DoFn.StateParam(ORDER), waiting=beam.DoFn.StateParam(WAITING)):
        _, read = element
        order = order_state.read() or file_order.FileOrder()
        arrived = list(waiting.read()) + [read]
        order, ready, still_waiting = order.release(arrived, lambda f: f.number, lambda f: f.parts)
        waiting.clear()
        for early in still_waiting:
            waiting.add(early)
        order_state.write(order)
        for numbered in ready:
            file = numbered.file
            yield numbered.connection_id, _FileUnit(numbered.seq, file.identity,
                                                    file.parts[numbered.connection_id], file.held)


class _SendFiles(beam.DoFn):
    """(connection, _FileUnit) -> BodyResults, each connection's files in the order found.

    Keyed by connection in the global window: one request in flight per connection. A unit
    that overtook an earlier one waits in state until the earlier one has been sent."""
    WAITING = userstate.BagStateSpec("waiting", beam.coders.PickleCoder())
    NEXT = userstate.ReadModifyWriteStateSpec("next", beam.coders.PickleCoder())

    def __init__(self, config, results_dir):
        self._config = config
        self._results = results_dir

    def setup(self):
        c = self._config
        self._ledger = RunState(c.state_path) if c.state_path else None
        self._client, self._key_error = _connect(c) if c.needs_api_key else (None, None)
        self._tally = engine.Tally()
        self._engines = engine.Deliveries(c, self._client, self._key_error, self._ledger, self._tally)

    def teardown(self):
        if self._client is not None:
            self._client.close()

    def process(self, element, waiting=beam.DoFn.StateParam(WAITING), next_state=beam.DoFn.StateParam(NEXT)):
        connection_id, unit = element
        expected = next_state.read() or 0
        units = sorted(list(waiting.read()) + [unit], key=lambda u: u.seq)
        waiting.clear()
        for position, ready in enumerate(units):
            if ready.seq < expected:
                continue  # already sent (a duplicate delivery of the element)
            if ready.seq > expected:
                for later in units[position:]:
                    waiting.add(later)
                break
            yield from self._send_unit(connection_id, ready)
            expected += 1
        next_state.write(expected)

    def _send_unit(self, connection_id, unit):
        record_path = FileSystems.join(self._results, UNITS_DIR, f"{connection_id}-{unit.identity.digest}.json")
        paths = unit.chunk_paths
        if paths and not all(FileSystems.exists(path) for path in paths) and FileSystems.exists(record_path):
            # A replay of a unit whose record was written and chunk file deleted: it was sent.
            yield from _recorded_results(record_path)
            return
        yield from self._deliver_unit(connection_id, unit, record_path)
        chunk_files.forget_open_files()
        if paths:  # recorded: nothing reads this file's rows again
            FileSystems.delete(paths)

    def _deliver_unit(self, connection_id, unit, record_path):
        c, made = self._config, []

        def plan():  # planned once; its plans are kept for the unit's record
            made.extend(file_units.file_plans(unit.identity, connection_id, unit.months, c.operation,
                                              c.max_body_bytes))
            return made
        results = self._engines[connection_id].deliver([engine.Unit(
            plan, label=f"file-{unit.identity.digest}", held=unit.held, refused_prefix=f"{unit.identity.path}: ")])
        self._tally.results(results)
        _publish(self._tally)
        _write_json(record_path, {
            "connection_id": connection_id, "path": unit.identity.path,
            "plans": [_plan_summary(plan) for plan in made],
            "results": [dataclasses.asdict(result) for result in results]})
        yield from results


def _recorded_results(record_path):
    with FileSystems.open(record_path) as handle:
        record = json.loads(handle.read().decode())
    return [from_record(result) for result in record["results"]]


def _plan_summary(plan):
    return {"connection_id": plan.connection_id, "month": plan.month, "row_count": plan.row_count,
            "row_bytes": plan.row_bytes, "cost_total": plan.cost_total, "refused": plan.refused,
            "body_count": plan.body_count, "body_bytes": plan.body_bytes}


class _WatchAndSend(beam.PTransform):
    """Example: `p | _WatchAndSend(config, dead_letter_prefix, results_dir)`.

    Polls `config.inputs` every `poll_interval` seconds until `watch_timeout` (None: until
    the job is cancelled) and uploads each new file once. Only files that appear whole may
    be picked up: write them elsewhere and rename them into place (locally), or upload them
    as finished objects (GCS)."""

    def __init__(self, config, dead_letter_prefix, results_dir, start=None, spread=None):
        super().__init__()
        self._config = config
        self._dead_letter = dead_letter_prefix
        self._results = results_dir
        self._start = start
        self._spread = spread  # None: spread the reads over workers unless the runner cannot

    def expand(self, pbegin):
        c = self._config
        start = self._start if self._start is not None else time.time()
        stop = start + c.watch_timeout if c.watch_timeout else MAX_TIMESTAMP
        patterns = tuple(c.inputs)
        spread = self._spread if self._spread is not None else _can_spread(pbegin.pipeline.runner)
        chunk_folder = _chunk_folder(pbegin.pipeline)  # removed by the command line when the watch ends
        found = (pbegin
                 | "Poll" >> PeriodicImpulse(start_timestamp=start, stop_timestamp=stop,
                                             fire_interval=c.poll_interval)
                 | "ListFiles" >> beam.Map(lambda _: ("watch", _list_files(patterns))).with_output_types(
                     typing.Tuple[str, typing.Any])
                 | "DiscoverFiles" >> beam.ParDo(_DiscoverFiles()))
        if spread:
            found = found | "SpreadFiles" >> beam.Reshuffle()
        return (found
                | "ReadFiles" >> beam.ParDo(_ReadFiles(
                    c.normalise_settings(), c.max_rejected_rows, self._dead_letter, self._results, chunk_folder))
                | "NumberFiles" >> beam.ParDo(_NumberFiles())
                | "SendFiles" >> beam.ParDo(_SendFiles(c, self._results)).with_input_types(
                    typing.Tuple[str, typing.Any]))


def _can_spread(runner):
    """Whether a Reshuffle passes each file on as it comes. Beam's in-process FnApiRunner
    holds a streaming GroupByKey until the watch ends (nothing would be sent before), so
    there the files of a bundle are only read side by side, on threads."""
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    return not isinstance(runner, FnApiRunner)
