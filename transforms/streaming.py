"""WriteStreaming: the unbounded path of `WriteToAnyCost`, one UTC hour at a time.

    rows --_ToHourParts--> ((connection, hour), rows of the hour) stamped at the hour's start
           |  (rejected: bad rows, and rows beyond the allowed lateness by their own timestamp)
         --hour windows, AfterWatermark + one late firing per late row--> GroupByKey
         --> (connection, HourPane)  re-windowed into the global window
         --_SendPanes (stateful, keyed by connection: one request in flight)--> delivered / failed

`replace_hourly` panes accumulate (each holds the whole hour so far) and the sender keeps
the newest pane index per hour in state, so that an older pane never replaces a newer one.
`sum` panes discard (each holds only new rows, so each row is sent once). Keys name the hour,
the pane and the body's bytes, and bodies are sorted canonically, so a bundle the runner
replays sends the same bytes under the same keys: CloudZero answers it as a replay, and the
ledger (`state_path`) skips it. No processing-time timers: the watermark drives everything.
"""
import json
import logging
import typing

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, userstate, window
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from anycost.delivery import api_key, engine
from anycost import cbf, delivery
from anycost.bodies import hour_units
from anycost.inputs import hourly, rows as cbf_rows
from anycost.delivery.client import AnyCostClient
from anycost.delivery.ledger import RunState
from transforms import result as results
from transforms.aggregate import _hour_windows
from transforms.metering import _publish

LOG = logging.getLogger("cloudzero.streaming")
REJECTED, FAILED = "rejected", "failed"
_BATCH_ROWS = 2000  # dict rows validated together: Arrow works per batch, not per row


def _too_late_reason(hour, arrived, lateness):
    late = int(arrived - hourly.hour_seconds(hour) - hour_units.HOUR_SECONDS)
    return (f"arrived {late} s after its hour {hour} ended, beyond allowed_lateness_seconds {lateness}: "
            "the hour was already delivered and closed, so the row was not sent. Send it in a later "
            "run (bounded input) or raise allowed_lateness_seconds")


class _ToHourParts(beam.DoFn):
    """Rows (dicts, or record batches) -> ((connection, hour), HourPart) at the hour's start.

    Dict rows are validated in batches of the bundle (flushed at `_BATCH_ROWS` and at the end
    of the bundle), so validation runs column by column in Arrow, not row by row. Each row's
    element timestamp is kept, to refuse rows that arrive beyond the allowed lateness with a
    reason instead of letting the hour window drop them silently. Rejected rows also count
    towards their hour's gate."""

    def __init__(self, settings):
        self._settings = settings.normalise_settings()
        self._connection_id = settings.connection_id
        self._stream_column = settings.stream_column
        self._lateness = settings.allowed_lateness_seconds
        self._too_late = Metrics.counter("cloudzero", "rows_too_late")
        self._rows_read = Metrics.counter("cloudzero", "rows_read")
        self._rows_rejected = Metrics.counter("cloudzero", "rows_rejected")

    def start_bundle(self):
        self._rows, self._arrived = [], []

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        arrived = float(timestamp) if timestamp > Timestamp(0) else None
        if isinstance(element, dict):
            self._rows.append(element)
            self._arrived.append(arrived)
            if len(self._rows) >= _BATCH_ROWS:
                yield from self._flush()
            return
        if isinstance(element, pa.Table):
            for batch in element.to_batches():
                yield from self._emit(cbf_rows.normalise_record_batch(batch, self._settings), arrived)
        elif isinstance(element, pa.RecordBatch):
            yield from self._emit(cbf_rows.normalise_record_batch(element, self._settings), arrived)
        else:
            self._rows_read.inc()
            self._rows_rejected.inc()
            yield _global(beam.pvalue.TaggedOutput(REJECTED, cbf_rows.reject(
                f"an element of type {type(element).__name__} is neither a dict nor a pyarrow.RecordBatch",
                {"element": repr(element)[:200]})))

    def finish_bundle(self):
        yield from self._flush()

    def _flush(self):
        rows, arrived = self._rows, self._arrived
        self._rows, self._arrived = [], []
        if not rows:
            return
        on_time, late = [], []
        for row, when in zip(rows, arrived):
            hour = hourly.hour_of_row(row) if when is not None else None
            if hour is not None and hourly.too_late(hour, when, self._lateness):
                late.append(cbf_rows.reject(_too_late_reason(hour, when, self._lateness), _shown(row)))
            else:
                on_time.append(row)
        self._too_late.inc(len(late))
        for record in late:
            yield _global(beam.pvalue.TaggedOutput(REJECTED, record))
        if on_time:
            yield from self._emit(cbf_rows.normalise_rows(on_time, self._settings), None)

    def _emit(self, result, arrived):
        self._rows_read.inc(result.rows_in)
        self._rows_rejected.inc(len(result.rejects))
        rejected_per_hour = {}
        for record in result.rejects:
            yield _global(beam.pvalue.TaggedOutput(REJECTED, record))
            unit = self._unit_of(record["values"])
            if unit:
                rejected_per_hour[unit] = rejected_per_hour.get(unit, 0) + 1
        for (connection_id, _), chunk in result.chunks:
            for hour, part in hour_units.split_by_hour(chunk.json_rows(), np.frombuffer(chunk.lengths, np.int32)):
                if arrived is not None and hourly.too_late(hour, arrived, self._lateness):
                    self._too_late.inc(len(part.lengths) // 4)
                    yield from self._late_part(part, hour, arrived)
                    continue
                yield _at_hour((connection_id, hour), part)
        for (connection_id, hour), count in sorted(rejected_per_hour.items()):
            yield _at_hour((connection_id, hour), hour_units.HourPart(b"", b"", count))

    def _late_part(self, part, hour, arrived):
        """A record batch's rows beyond the lateness: one rejected record per row."""
        lengths = np.frombuffer(part.lengths, np.int32)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        reason = _too_late_reason(hour, arrived, self._lateness)
        for start, end in zip(offsets[:-1], offsets[1:]):
            yield _global(beam.pvalue.TaggedOutput(REJECTED, cbf_rows.reject(
                reason, json.loads(part.rows[start:end - 1]))))

    def _unit_of(self, row_values):
        """(connection, hour) a rejected row belongs to, when both can be read."""
        connection_id = self._connection_id or row_values.get(self._stream_column)
        hour = hourly.hour_of_row(row_values)
        if hour is None or not cbf.is_valid_connection_id(connection_id):
            return None
        return connection_id, hour


def _shown(row):
    """A rejected dict row's values as text, for the person reading the dead letter."""
    shown = {}
    for column, value in row.items():
        try:
            text = hourly.value_text(str(column), value)
        except hourly.Unreadable:
            text = repr(value)
        if text is not None:
            shown[str(column)] = text
    return shown


def _global(tagged_or_value, seconds=None):
    """A value (or tagged value) as a WindowedValue, so that finish_bundle may emit it too."""
    when = Timestamp(seconds) if seconds is not None else Timestamp(0)
    if isinstance(tagged_or_value, beam.pvalue.TaggedOutput):
        return beam.pvalue.TaggedOutput(tagged_or_value.tag,
                                        WindowedValue(tagged_or_value.value, when, [GlobalWindow()]))
    return WindowedValue(tagged_or_value, when, [GlobalWindow()])


def _at_hour(key, part):
    """Stamped at the hour's start: the hour windows then follow `time/usage_start`."""
    return _global((key, part), hourly.hour_seconds(key[1]))


@beam.typehints.with_output_types(typing.Tuple[str, typing.Any])
class _ToPane(beam.DoFn):
    """((connection, hour), parts) of one pane -> (connection, HourPane), with the pane index."""

    def process(self, element, pane_info=beam.DoFn.PaneInfoParam):
        (connection_id, hour), parts = element
        yield connection_id, hour_units.join_parts(connection_id, hour, pane_info.index, parts)


class _SendPanes(beam.DoFn):
    """(connection, HourPane) -> BodyResults: delivered on the main output, the rest on `failed`.

    Keyed by connection in the global window, so each connection's panes are processed one
    at a time on one worker: one request in flight per connection. The state is the
    connection's `HourBook` (newest pane per hour, held hours), committed by the runner
    together with this step's outputs; a garbage-collection timer on the watermark forgets
    hours no pane can come for any more."""
    BOOK = userstate.ReadModifyWriteStateSpec("hours", beam.coders.PickleCoder())
    FORGET = userstate.TimerSpec("forget", userstate.TimeDomain.WATERMARK)

    def __init__(self, settings, after_send=None):
        self._settings = settings
        self._after_send = after_send  # tests only: called after each pane's requests

    def setup(self):
        s = self._settings
        self._ledger = RunState(s.state_path) if s.state_path else None
        self._client, self._key_error = _connect(s) if s.needs_api_key else (None, None)
        self._tally = engine.Tally()
        self._engines = engine.Deliveries(s, self._client, self._key_error, self._ledger, self._tally)

    def teardown(self):
        if self._client is not None:
            self._client.close()

    def process(self, element, book_state=beam.DoFn.StateParam(BOOK), forget=beam.DoFn.TimerParam(FORGET)):
        _, pane = element
        s = self._settings
        book = hour_units.HourBook(s.operation, s.max_rejected_rows, s.allowed_lateness_seconds, book_state.read())
        action, reason = book.decide(pane)
        book_state.write(book.entries)
        forget.set(Timestamp(book.next_expiry()))
        if action == hour_units.SUPERSEDED:
            Metrics.counter("cloudzero", "panes_superseded").inc()
            LOG.info("%s: an older pane than one already sent; skipped", pane.describe())
            return
        if action == hour_units.HELD:
            Metrics.counter("cloudzero", "panes_held").inc()
        if not pane.row_count:  # only rejected rows so far: say the hour is held, or nothing
            sent = [self._unsent(pane, delivery.NOT_SENT, reason)] if action == hour_units.HELD else []
        else:
            unit = engine.Unit(lambda: [hour_units.pane_plan(pane, s.operation, s.max_body_bytes)],
                               label=hour_units.pane_label(pane), held=reason, refused_prefix="")
            sent = self._engines[pane.connection_id].deliver([unit])
        self._tally.results(sent)
        _publish(self._tally)
        if self._after_send is not None:
            self._after_send(pane, sent)
        for result in sent:
            record = results._record(result)
            if result.status in engine.GOOD:
                if not record["message"]:
                    record["message"] = f"hour {pane.hour}, pane {pane.pane}"
                yield record
            else:
                yield beam.pvalue.TaggedOutput(FAILED, record)

    @userstate.on_timer(FORGET)
    def forget_hours(self, book_state=beam.DoFn.StateParam(BOOK), forget=beam.DoFn.TimerParam(FORGET),
                     fired=beam.DoFn.TimestampParam):
        s = self._settings
        book = hour_units.HourBook(s.operation, s.max_rejected_rows, s.allowed_lateness_seconds, book_state.read())
        following = book.forget_expired(float(fired))
        if following is None:
            book_state.clear()
            return
        book_state.write(book.entries)
        forget.set(Timestamp(following))

    def _unsent(self, pane, status, message):
        return delivery.BodyResult(pane.connection_id, pane.month, 0, 0, pane.row_count, len(pane.rows), status,
                                   message=message)


def _connect(settings):
    """(HTTP client, None) for a sender's worker, or (None, why the key could not be read).
    Called in `DoFn.setup()`: the key lives in the worker's memory only."""
    try:
        key = api_key.load(settings.api_key_env, settings.api_key_secret)
    except api_key.ApiKeyError as err:
        return None, str(err)
    return AnyCostClient(settings.api_url, key, settings.connect_timeout, settings.read_timeout,
                         settings.test_namespace), None


class _WriteStreaming(beam.PTransform):
    """The unbounded half of `WriteToAnyCost` (which chooses it for unbounded input).

    Returns a `WriteToAnyCostResult` with the same records as the bounded path: `delivered`
    and `failed` (one dict per body, a delivered one's message naming its hour and pane) and
    `rejected` (`{"reason", "values"}` per row). `settings` is the write path's settings
    (`anycost.config.WriteSettings`); `after_send` is a hook for tests only."""

    def __init__(self, settings, after_send=None):
        super().__init__()
        if settings.operation not in (hour_units.SUM, hour_units.REPLACE_HOURLY):
            raise ValueError(f"operation {settings.operation!r} needs bounded input: on unbounded input "
                             "use replace_hourly (each hour replaced whole) or sum")
        if settings.verify or settings.mode == "verify_only":
            raise ValueError("verify reads whole months back, which an unbounded input never finishes: "
                             "use it with bounded input")
        self._settings = settings
        self._after_send = after_send

    def expand(self, rows):
        s = self._settings
        accumulation = (trigger.AccumulationMode.ACCUMULATING if s.operation == hour_units.REPLACE_HOURLY
                        else trigger.AccumulationMode.DISCARDING)
        parts = rows | "ToHourParts" >> beam.ParDo(_ToHourParts(s)).with_outputs(REJECTED, main="parts")
        sent = (parts.parts
                | "HourWindows" >> _hour_windows(s.allowed_lateness_seconds, accumulation)
                | "GroupByHour" >> beam.GroupByKey().with_input_types(
                    typing.Tuple[typing.Tuple[str, str], typing.Any])
                | "ToPane" >> beam.ParDo(_ToPane())
                | "OneKeyPerConnection" >> beam.WindowInto(window.GlobalWindows())
                | "SendPanes" >> beam.ParDo(_SendPanes(s, self._after_send)).with_input_types(
                    typing.Tuple[str, typing.Any]).with_outputs(FAILED, main="delivered"))
        return results.WriteToAnyCostResult(sent.delivered, sent[FAILED], parts[REJECTED])
