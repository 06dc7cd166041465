"""WriteToAnyCost: the connector as a Beam sink, for rows from any pipeline."""
import dataclasses
import json
import typing

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms.display import DisplayDataItem
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from anycost import cbf, config, in_order, memory
from anycost.inputs import chunk_files, normalise, rows, sources
from anycost.outcomes import report
from transforms import result as results
from transforms.batch import CbfBatch
from transforms.bounded import _WriteBounded
from transforms.chunk_files import _RemoveChunkFiles, _chunk_folder
from transforms.streaming import _WriteStreaming

REJECTED, TALLIES = "rejected", "tallies"
ROWS_PER_BATCH = 65_536  # dict rows are validated and rendered this many at a time


class WriteToAnyCost(beam.PTransform):
    """Delivers cost rows to a CloudZero AnyCost Stream connection.

    Example, runnable against the bundled emulator (start it with
    `CLOUDZERO_API_KEY=local-key python -m anycost_emulator --port 8080`, and run this with
    the same variable set)::

        import apache_beam as beam
        from decimal import Decimal
        from transforms import WriteToAnyCost

        with beam.Pipeline() as p:
            result = (p
                      | beam.Create([{"time/usage_start": "2024-08-01T10:00:00Z",
                                      "resource/id": "vm-1", "cost/cost": Decimal("1.25")}])
                      | WriteToAnyCost(connection_id="my-connection", api_url="http://127.0.0.1:8080"))
            result.failed | "Failed" >> beam.Map(print)
            result.rejected | "Rejected" >> beam.Map(print)

    Elements are dicts mapping Common Bill Format column names to `str`, `int`, `float`,
    `decimal.Decimal`, `datetime.datetime` (aware, or naive meaning UTC), `datetime.date`
    (midnight UTC), a Beam `Timestamp` or `None` (absent); schema'd rows (`beam.Row`, what
    Beam SQL and YAML give) with such fields, their names mapped to CBF columns by
    `column_map`; `pyarrow.RecordBatch`es with CBF columns of any Arrow type the Parquet
    reader takes, the fast path for big inputs; or the `CbfBatch`es of `ReadCbf`. Values
    get the text the file path gives them: a float as its shortest round-trip decimal, a
    Decimal exactly. Money never passes through a binary float on the way.

    From `ReadCbf` (bounded): the rows it refused count toward `max_rejected_rows` and are in
    `result.rejected`; a file that broke part-way holds every POST back; bodies and keys
    are the command line's for the same files, in file order.

    Bounded input: every row is validated before anything is posted. With more rejected
    rows than `max_rejected_rows`, nothing is posted, the pipeline still completes and every
    body is in `result.failed` with the reason. Rows are grouped by connection, so each
    connection has one request in flight, months ascending. Each stream-month's rows are
    sorted canonically (by their JSON) before bodies are cut, so the same rows give
    byte-identical bodies and idempotency keys in any order, bundling and runner.

    Unbounded input (streaming): rows are windowed by the UTC hour of `time/usage_start`.
    With "replace_hourly", each hour of a connection is sent whole once the watermark passes
    its end, and again, whole, for rows arriving within `allowed_lateness_seconds`; an older
    version of an hour never overwrites a newer one. With "sum", each row is sent once. A
    stateful sender keyed by connection keeps one request in flight per connection; an hour
    with more rejected rows than `max_rejected_rows` is held back whole and reported in
    `result.failed`. Bodies and idempotency keys are a pure function of the pane, so a bundle
    the runner replays counts nothing twice. See docs/beam-api.md, "Streaming: rows from an
    unbounded source".

    Args:
      connection_id: the AnyCost Stream connection every row goes to. Default None; give
        exactly one of `connection_id` and `stream_column`.
      stream_column: the column naming each row's connection (removed from the row).
        Default None.
      operation: "sum" (default) adds the rows to the month; "replace_hourly" replaces the
        UTC hours the rows cover; "replace_drop" replaces the whole month (bounded input only).
      api_url: default "https://api.cloudzero.com". Plain http only for a loopback host.
      api_key_env: the environment variable holding the API key on the workers.
        Default "CLOUDZERO_API_KEY".
      api_key_secret: a Secret Manager version, "projects/P/secrets/S/versions/V", read
        instead of `api_key_env` when given. Default None. The key is read in
        `DoFn.setup()` and never pickled, logged or reported.
      max_body_bytes: the largest request body, 1,000 to 5,000,000 (default 5,000,000).
      max_rejected_rows: rejected rows tolerated before nothing is posted. Default 0.
      state_path: a delivery ledger (local or gs://): a rerun skips bodies it records as
        delivered. Default None. Recommended: only with a ledger may a body move to a new
        idempotency key after CloudZero replays an error to its key (see
        docs/failure-and-rerun.md, "Moves need the ledger"); without one such a body fails, saying so.
      test_namespace: sent as `cloudzero-test-key` on every request. Default None.
      max_attempts: attempts per body. Default 8. A retry keeps the body's idempotency key
        while any attempt may have been applied; after definite errors only, and only with
        `state_path`, it moves to the body's next key, since CloudZero replays a key's first
        answer, errors included.
      max_retry_seconds: the longest a body is retried. Default 600.0.
      lease_wait_seconds: with `state_path`, one run at a time sends a connection: it holds
        the connection's lease in the ledger. Another run (an orchestrator's retry of a live
        attempt) waits this long for it, then resumes from the ledger; past it, that
        connection is not sent and the failure names the holder. Default 900.0.
      max_concurrent_streams: connections sent in parallel per worker. Default 8.
      allowed_lateness_seconds: unbounded input only: how late a row may arrive and still
        have its hour sent again. Default 3600.
      input_format: "cbf" (default): columns are CBF columns; "focus": FinOps FOCUS columns
        (`ChargePeriodStart`, `BilledCost`, ... with `Tags` as JSON text, or a map or struct
        column in record batches), mapped to CBF as the command line's `--input_format focus`.
      skip_month_check: with operation "sum", each connection's months are first read back
        from CloudZero, so that a month's limits count its earlier drops; True sends without
        that check (for a key that may not read billing drops). Default False.
      column_map: a dict {field or column name: CBF column} renaming the fields of dicts,
        `beam.Row`s and record batches before anything else, e.g. `{"cost_cost": "cost/cost",
        "usage_start": "time/usage_start"}` for schema'd rows, whose field names cannot hold
        "/". Default None. Not applied to `CbfBatch`es, whose columns are CBF already.

    Returns:
      A `WriteToAnyCostResult` with the PCollections `delivered`, `failed` and `rejected`.

    Raises:
      ValueError: at construction, naming the parameter, for a setting that cannot work;
        in `expand()` for operation="replace_drop" on unbounded input.
    """

    def __init__(self, connection_id=None, stream_column=None, operation="sum",
                 api_url="https://api.cloudzero.com", api_key_env="CLOUDZERO_API_KEY", api_key_secret=None,
                 max_body_bytes=cbf.MAX_BODY_BYTES, max_rejected_rows=0, state_path=None, test_namespace=None,
                 max_attempts=8, max_retry_seconds=600.0, lease_wait_seconds=900.0, max_concurrent_streams=8,
                 allowed_lateness_seconds=3600, input_format="cbf", skip_month_check=False, column_map=None):
        super().__init__()
        self._column_map = _column_map(column_map)
        self._settings = config.WriteSettings(
            connection_id=connection_id, stream_column=stream_column, operation=operation, api_url=api_url,
            api_key_env=api_key_env, api_key_secret=api_key_secret, max_body_bytes=max_body_bytes,
            max_rejected_rows=max_rejected_rows, state_path=state_path, test_namespace=test_namespace,
            max_attempts=max_attempts, max_retry_seconds=max_retry_seconds, lease_wait_seconds=lease_wait_seconds,
            max_concurrent_streams=max_concurrent_streams, allowed_lateness_seconds=allowed_lateness_seconds,
            input_format=input_format, skip_month_check=skip_month_check).check()

    @classmethod
    def _from_settings(cls, settings: config.WriteSettings):
        """The command line's WriteToAnyCost: its flags' settings (modes, timeouts, and
        messages naming --flags), checked by the command line already."""
        transform = cls.__new__(cls)
        beam.PTransform.__init__(transform)
        transform._column_map, transform._settings = (), settings
        return transform

    @property
    def settings(self):
        return self._settings

    def display_data(self):
        """The settings, as a runner's UI shows them; never the API key (only where it is read from)."""
        s = self._settings
        shown = {
            "connection_id": s.connection_id, "stream_column": s.stream_column, "operation": s.operation,
            "api_url": s.api_url, "api_key_env": None if s.api_key_secret else s.api_key_env,
            "api_key_from_secret_manager": s.api_key_secret is not None,
            "max_body_bytes": s.max_body_bytes, "max_rejected_rows": s.max_rejected_rows,
            "state_path": s.state_path, "test_namespace": s.test_namespace, "max_attempts": s.max_attempts,
            "max_retry_seconds": float(s.max_retry_seconds), "lease_wait_seconds": float(s.lease_wait_seconds),
            "max_concurrent_streams": s.max_concurrent_streams,
            "allowed_lateness_seconds": s.allowed_lateness_seconds, "input_format": s.input_format,
            "skip_month_check": s.skip_month_check,
            "column_map": json.dumps(dict(self._column_map)) if self._column_map else None,
        }
        if s.mode != config.SEND:
            shown["mode"] = s.mode
        return {name: DisplayDataItem(value, label=name) for name, value in shown.items() if value is not None}

    def expand(self, pcoll):
        if pcoll.is_bounded is False:
            return self._expand_unbounded(pcoll | "AsCbfRows" >> beam.Map(_as_cbf_element, self._column_map))
        settings = self._settings
        if not isinstance(pcoll.windowing.windowfn, GlobalWindows):  # one window: one gate, one key per connection
            pcoll = pcoll | "GlobalWindow" >> beam.WindowInto(GlobalWindows())
        chunk_folder = _chunk_folder(pcoll.pipeline)
        normalised = (pcoll
                      | "Normalise" >> beam.ParDo(_NormaliseRows(settings, chunk_folder, self._column_map)).with_outputs(
                          REJECTED, TALLIES, main="chunks"))
        rejected = normalised[REJECTED]
        written = {"chunks": normalised["chunks"], "tallies": normalised[TALLIES]} | "Write" >> _WriteBounded(settings)
        _ = written.results | "RemoveChunkFiles" >> _RemoveChunkFiles(chunk_folder)
        split = written.results | "SplitResults" >> beam.FlatMap(results._split_body_result).with_outputs(
            results.FAILED, main=results.DELIVERED)
        refused = written.summaries | "RefusedMonths" >> beam.FlatMap(results._refused_month)
        failed = (split[results.FAILED], refused) | "Failed" >> beam.Flatten()
        return results.WriteToAnyCostResult(split[results.DELIVERED], failed, rejected,
                                            written.summaries, written.results)

    def _expand_unbounded(self, pcoll):
        if self._settings.operation == "replace_drop":
            raise ValueError("operation='replace_drop' replaces a whole month, so it needs bounded input; "
                             "this PCollection is unbounded: use operation='replace_hourly' or 'sum'")
        return pcoll | "Streaming" >> _WriteStreaming(self._settings)


def _column_map(column_map):
    """`column_map` as sorted (source, target) pairs; ValueError naming it when it is not a map."""
    if not column_map:
        return ()
    try:
        return sources.parse_column_map(json.dumps(dict(column_map)), "column_map")
    except (sources.ColumnMapError, TypeError, ValueError) as err:
        raise ValueError(str(err)) from None


def _as_cbf_element(element, column_map=()):
    """A schema'd row (`beam.Row`, a NamedTuple of a schema'd PCollection) as a dict, and a
    dict's keys or a record batch's columns renamed by `column_map`; anything else as it is."""
    if isinstance(element, CbfBatch):
        return element
    if hasattr(element, "_asdict") and not isinstance(element, dict):
        element = {name: _plain(value) for name, value in element._asdict().items()}
    if not column_map:
        return element
    mapping = dict(column_map)
    if isinstance(element, dict):
        return {mapping.get(name, name): value for name, value in element.items()}
    if isinstance(element, pa.RecordBatch):
        return element.rename_columns([mapping.get(name, name) for name in element.schema.names])
    return element


def _plain(value):
    """A Beam schema's timestamp (`Timestamp`) as the aware datetime the row path takes."""
    return value.to_utc_datetime(has_tz=True) if isinstance(value, Timestamp) else value


@beam.typehints.with_output_types(typing.Tuple[typing.Tuple[str, str], typing.Any])
class _NormaliseRows(beam.DoFn):
    """Dict rows (gathered into batches of `ROWS_PER_BATCH`), record batches and CbfBatches -> chunks.

    Main output: ((connection_id, month), ChunkRef). Each bundle's chunk rows go to one new
    chunk file in `chunk_folder` (`anycost.inputs.chunk_files`); the file is closed in
    `finish_bundle` and only then are the references emitted, so the shuffles carry row
    lengths, never rows. Tagged `rejected`: a record per rejected row; `tallies`: one
    `report.BundleTally` per bundle that rejected rows or met a file that broke part-way,
    what the gate counts (no combine of its own: a few per run, read as a side input).
    Expects the global window (the bounded path re-windows first): what a bundle gathered
    is emitted from `finish_bundle` there.

    Schema'd rows and `column_map` are applied here (`_as_cbf_element`), not in a step of
    their own: with a dict per row, every step costs Beam's per-element overhead."""

    def __init__(self, settings, chunk_folder, column_map=()):
        # decided here, where the pipeline is built: a local folder's filesystem is this machine's
        self._settings = dataclasses.replace(settings.normalise_settings(),
                                             compress_rows=chunk_files.compress_rows(chunk_folder))
        self._chunk_folder = chunk_folder
        self._column_map = column_map
        self._rows_read = Metrics.counter("cloudzero", "rows_read")
        self._rows_rejected = Metrics.counter("cloudzero", "rows_rejected")

    def setup(self):
        memory.return_big_buffers()  # the months' rows and bodies the sink builds in this process

    def start_bundle(self):
        self._rejected, self._file_errors = 0, 0  # this bundle's, for its tally
        self._buffer = []
        self._file, self._refs = None, []
        self._work = in_order.InOrder()  # batches normalised on the process's cores, kept in order

    def process(self, element):
        # Not a generator: the common case, a dict per row, returns None and costs no
        # generator object, since it is a million calls for a million rows.
        if type(element) is dict and not self._column_map:  # pylint: disable=unidiomatic-typecheck
            return self._add_dict(element)
        return self._process_element(_as_cbf_element(element, self._column_map))

    def _add_dict(self, row):
        """Gather a dict row; the outputs of a full batch (a generator), else None."""
        self._buffer.append(row)
        return self._flush() if len(self._buffer) >= ROWS_PER_BATCH else None

    def _process_element(self, element):
        if isinstance(element, CbfBatch):
            yield from self._cbf_batch(element)
        elif isinstance(element, dict):
            yield from self._add_dict(element) or ()
        elif isinstance(element, pa.RecordBatch):
            yield from self._queue(rows.normalise_record_batch, element, self._settings)
        elif isinstance(element, pa.Table):
            for batch in element.to_batches():
                yield from self._queue(rows.normalise_record_batch, batch, self._settings)
        else:
            self._rows_read.inc()
            self._rows_rejected.inc()
            yield self._reject(rows.reject(
                f"an element of type {type(element).__name__} is not a dict, beam.Row, pyarrow.RecordBatch "
                "or CbfBatch",
                {"element": repr(element)[:200]}))

    def _cbf_batch(self, element):
        """Validated as the command line validates a file's batch: the same chunks, in file
        order. `ReadCbf` counted the rows read and those it refused (Beam metrics) already."""
        self._file_errors += 1 if element.file_error else 0
        before = [self._reject(record) for record in element.rejects]
        source = normalise.SourceBatch(element.file, element.order, element.row_numbers)
        yield from self._queue(normalise.normalise_batch, element.batch, source, self._settings,
                               before=before, rows_counted=True)

    def finish_bundle(self):
        outputs = list(self._flush())
        for note, normalised in self._work.drain():
            outputs.extend(self._emit(note, normalised))
        for output in outputs:
            yield beam.pvalue.TaggedOutput(output.tag, _global(output.value))
        if self._rejected or self._file_errors:
            yield beam.pvalue.TaggedOutput(TALLIES, _global(report.BundleTally(self._rejected, self._file_errors)))
        if self._file is not None:
            self._file.close()  # before any reference to it leaves the bundle
        refs, self._file, self._refs = self._refs, None, []
        for ref in refs:
            yield _global(ref)

    def _keep(self, keyed_chunks):
        """Append the chunks' rows to the bundle's chunk file; keep their references."""
        for key, chunk in keyed_chunks:
            if self._file is None:
                self._file = chunk_files.ChunkFile(self._chunk_folder)
            self._refs.append((key, self._file.add(chunk)))

    def _flush(self):
        buffered, self._buffer = self._buffer, []
        if buffered:
            # Taking dicts apart is Python, not Arrow: on the pool it fights the source for the
            # GIL (with inline=False here, `benchmarks.run --only write-dicts` took 33-36 s, not 27 s).
            yield from self._queue(rows.normalise_rows, buffered, self._settings, inline=True)

    def _queue(self, normalise_fn, *args, before=(), rows_counted=False, inline=False):
        """`normalise_fn(*args)` on the shared pool (or here, `inline`); emit whatever earlier
        work is now due, in order."""
        for note, normalised in self._work.submit(normalise_fn, *args, note=(before, rows_counted), inline=inline):
            yield from self._emit(note, normalised)

    def _emit(self, note, normalised):
        """A batch's outputs, in this bundle's thread (Beam's metrics and outputs live there):
        what came with the batch (read rejects, a file error), then its chunks and rejects."""
        before, rows_counted = note
        yield from before
        if not rows_counted:  # ReadCbf counted a CbfBatch's rows read already
            self._rows_read.inc(normalised.rows_in)
        self._rows_rejected.inc(len(normalised.rejects))
        self._keep(normalised.chunks)
        for record in normalised.rejects:
            yield self._reject(record)

    def _reject(self, record):
        self._rejected += 1
        return beam.pvalue.TaggedOutput(REJECTED, record)


def _global(value):
    return WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()])
