"""AggregateHourly: usage rows merged per connection and UTC hour, amounts summed exactly."""
import typing

import apache_beam as beam
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration

from anycost.inputs import hourly

HOUR_SECONDS = 3600
_UNREADABLE = "unreadable"


def _hour_windows(allowed_lateness_seconds, accumulation_mode):
    """UTC hours as windows, one pane when the watermark passes the hour's end and one more
    for each late row within the allowed lateness."""
    return beam.WindowInto(
        window.FixedWindows(HOUR_SECONDS),
        trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
        accumulation_mode=accumulation_mode,
        allowed_lateness=Duration(seconds=allowed_lateness_seconds))


@beam.typehints.with_output_types(typing.Tuple[str, typing.Any])
class _KeyByHour(beam.DoFn):
    """row -> (merge key, partial); on unbounded input stamped at its hour's start, so that the
    hour windows follow `time/usage_start`. Unreadable rows, and rows beyond the allowed
    lateness by their own timestamp, go to the tagged output unchanged."""

    def __init__(self, allowed_lateness_seconds=None):
        self._lateness = allowed_lateness_seconds

    def process(self, row, timestamp=beam.DoFn.TimestampParam):
        try:
            key, partial = hourly.hour_key(row)
        except (hourly.Unreadable, AttributeError):
            yield beam.pvalue.TaggedOutput(_UNREADABLE, row)
            return
        if self._lateness is None:
            yield key, partial
            return
        hour = hourly.key_hour(key)
        if hourly.too_late(hour, float(timestamp), self._lateness):
            yield beam.pvalue.TaggedOutput(_UNREADABLE, row)  # WriteToAnyCost reports it as too late
            return
        yield window.TimestampedValue((key, partial), hourly.hour_seconds(hour))


class _MergeHourly(beam.CombineFn):
    def create_accumulator(self):
        return hourly.Partial({}, None)

    def add_input(self, accumulator, partial):
        return hourly.merge([accumulator, partial])

    def merge_accumulators(self, accumulators):
        return hourly.merge(accumulators)

    def extract_output(self, accumulator):
        return accumulator


class AggregateHourly(beam.PTransform):
    """Merges usage rows per connection and UTC hour, summing their amounts exactly.

    Example::

        events = p | beam.io.ReadFromPubSub(subscription=...) | beam.Map(parse_event)
        (events
         | AggregateHourly()
         | WriteToAnyCost(stream_column="connection", operation="replace_hourly"))

    Rows (dicts of CBF column -> value) that share the UTC hour of `time/usage_start` and
    the same value in every other column except `cost/*`, `usage/amount` and
    `time/usage_end` become one row: `time/usage_start` is the hour's start,
    `time/usage_end` the latest of the rows', and `cost/*` and `usage/amount` the exact
    `Decimal` sums. `lineitem/id` is compared like any column, so per-event ids keep rows
    apart: drop it first. Rows it cannot read pass through unchanged for `WriteToAnyCost`
    to reject with a reason. See `anycost.inputs.hourly` for the rules.

    On bounded input each key gives one row. On unbounded input the rows are windowed by
    the hour of their `time/usage_start`: one row per key when the watermark passes the
    hour's end, and for rows arriving later, within `allowed_lateness_seconds`, a further
    row holding only the late amounts (discarding panes), so that the sums downstream stay
    exact in both `sum` and `replace_hourly`. A row that arrives (by its own timestamp)
    beyond the allowed lateness passes through unmerged, and `WriteToAnyCost` reports it.

    Args:
      allowed_lateness_seconds: unbounded input only; how long after an hour's end its rows
        are still merged (default 3600). Give `WriteToAnyCost` at least as much.
    """

    def __init__(self, allowed_lateness_seconds=3600):
        super().__init__()
        if not isinstance(allowed_lateness_seconds, (int, float)) or allowed_lateness_seconds < 0:
            raise ValueError(f"allowed_lateness_seconds must be zero or more, not {allowed_lateness_seconds!r}")
        self._lateness = allowed_lateness_seconds

    def expand(self, rows):
        unbounded = not rows.is_bounded
        keyed = rows | "KeyByHour" >> beam.ParDo(
            _KeyByHour(self._lateness if unbounded else None)).with_outputs(_UNREADABLE, main="keyed")
        readable, unreadable = keyed.keyed, keyed[_UNREADABLE]
        if unbounded:
            readable = readable | "HourWindows" >> _hour_windows(self._lateness, trigger.AccumulationMode.DISCARDING)
            unreadable = unreadable | "SameWindows" >> _hour_windows(self._lateness,
                                                                   trigger.AccumulationMode.DISCARDING)
        merged = (readable
                  | "Merge" >> beam.CombinePerKey(_MergeHourly()).with_input_types(
                      typing.Tuple[str, typing.Any])
                  | "ToRow" >> beam.MapTuple(hourly.merged_row))
        return (merged, unreadable) | "WithUnreadable" >> beam.Flatten()
