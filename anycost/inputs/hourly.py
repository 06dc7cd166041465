"""Hourly aggregation of usage rows: the pure half of `transforms.AggregateHourly`.

CloudZero holds at most 1,000,000 rows per stream and month, and an event stream has
millions of events a month. Rows that differ only in their amounts within one UTC hour are
one charge as far as CloudZero is concerned (it counts a charge in the hour of its
`time/usage_start`), so they are merged into one row whose amounts are the exact sums.

The rules, decided once here:

- Two rows merge when their `time/usage_start` falls in the same UTC hour and every other
  column holds the same text, except the summed columns (`cost/*`, `usage/amount`) and
  `time/usage_end`. The stream column (or whatever names the connection) is an ordinary
  column here, so rows of different connections never merge.
- The merged row's `time/usage_start` is the hour's start (`2024-09-01T05:00:00Z`): that is
  the hour CloudZero counts it in, and the same rows always give the same row.
- Its `time/usage_end` is the latest `time/usage_end` of the rows merged (absent when none had
  one): an event's end varies per event and would otherwise keep every event apart.
- A summed column is summed with `Decimal`, never a float; it is part of the merge key
  whether a row *has* it, so that a missing `cost/discounted_cost` is never taken for 0.
- `lineitem/id` is an ordinary column: rows with distinct ids are distinct line items and
  are not merged. Drop the column before aggregating when the ids are per event.
- A row that cannot be read (no or a bad `time/usage_start`, a summed value that is not a
  number, a value of a type with no CBF form) is passed on unchanged, so that the write
  step rejects it with its reason instead of it vanishing here.

Values are read the way the write path renders them: `str` as is, `int` as written,
`float` as its shortest round-trip decimal, `Decimal` exactly, `datetime` in UTC (naive
means UTC), `date` as midnight UTC. No Beam, no HTTP.
"""
import calendar
import datetime as dt
import decimal
import json
from decimal import Decimal
from typing import Dict, NamedTuple, Optional, Tuple

from anycost import cbf
from anycost.inputs import values

USAGE_AMOUNT = "usage/amount"
_UTC = dt.timezone.utc


def is_summed(column):
    return column.startswith("cost/") or column == USAGE_AMOUNT


class Unreadable(ValueError):
    """A row this module cannot merge; it is passed on for the write step to judge."""


class Partial(NamedTuple):
    """What is known of a merged row so far: exact sums and the latest usage end."""
    sums: Dict[str, Decimal]
    usage_end: Optional[str]


def value_text(column, value):
    """One value as CBF text (None for absent); raises Unreadable when it has no text form."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise Unreadable(f"{column}: a bool has no Common Bill Format text form")
    if isinstance(value, str):
        return value if value != "" else None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        try:
            return values.render_float(value)
        except values.InvalidValue as err:
            raise Unreadable(f"{column}: {err}") from None
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise Unreadable(f"{column}: {value} is not a finite number")
        return format(value, "f")
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(_UTC).replace(tzinfo=None)
        text = value.strftime("%Y-%m-%dT%H:%M:%S")
        if value.microsecond:
            text += (".%06d" % value.microsecond).rstrip("0")
        return text + "Z"
    if isinstance(value, dt.date):
        return value.strftime("%Y-%m-%d") + "T00:00:00Z"
    raise Unreadable(f"{column}: a value of type {type(value).__name__} has no Common Bill Format text form")


def _timestamp(column, value):
    text = value_text(column, value)
    if text is None:
        raise Unreadable(f"{column} is empty")
    try:
        return values.render_timestamp(text)
    except values.InvalidValue as err:
        raise Unreadable(f"{column}: {err}") from None


def _amount(column, value):
    text = value_text(column, value)
    try:
        return Decimal(values.render_number(text))
    except values.InvalidValue as err:
        raise Unreadable(f"{column}: {err}") from None


def hour_start(timestamp_text):
    """`2024-09-01T05:17:09.5Z` -> `2024-09-01T05:00:00Z` (the text is already UTC)."""
    return timestamp_text[:13] + ":00:00Z"


def hour_key(row) -> Tuple[str, Partial]:
    """(merge key, the row's own sums) for a dict row; raises Unreadable.

    The key is one `str` (JSON of the hour and the other columns' text, sorted), so that it
    encodes deterministically, as a Beam key must."""
    start = _timestamp(cbf.USAGE_START, row.get(cbf.USAGE_START))
    sums, others, usage_end = {}, [], None
    for column, value in row.items():
        if not isinstance(column, str):
            raise Unreadable(f"column name {column!r} is not text")
        if value is None or value == "" or column == cbf.USAGE_START:
            continue
        if is_summed(column):
            sums[column] = _amount(column, value)
        elif column == cbf.USAGE_END:
            usage_end = _timestamp(column, value)
        else:
            others.append((column, value_text(column, value)))
    key = json.dumps([hour_start(start), sorted(sums), sorted(others)], separators=(",", ":"))
    return key, Partial(sums, usage_end)


def _exact():
    context = decimal.Context(prec=400, traps=[decimal.Inexact, decimal.Rounded, decimal.InvalidOperation])
    return decimal.localcontext(context)


def merge(partials) -> Partial:
    """Partials of one key merged: exact sums, the latest usage end. Order does not matter."""
    sums, usage_end = {}, None
    with _exact():
        for partial in partials:
            for column, amount in partial.sums.items():
                sums[column] = sums[column] + amount if column in sums else amount
            if partial.usage_end is not None and (usage_end is None
                                                  or _instant(partial.usage_end) > _instant(usage_end)):
                usage_end = partial.usage_end
    return Partial(sums, usage_end)


def _instant(timestamp_text):
    """A UTC timestamp's text as something that sorts by time (`...:00.5Z` is after `...:00Z`)."""
    return timestamp_text[:19], Decimal("0" + timestamp_text[19:-1])


def key_hour(key):
    """The hour start a merge key opens with (`["2024-09-01T05:00:00Z",...`)."""
    return key[2:22]


def hour_seconds(hour_text):
    """Seconds since the epoch of an hour start's text (`2024-09-01T05:00:00Z`)."""
    return calendar.timegm(dt.datetime.strptime(hour_text, "%Y-%m-%dT%H:%M:%SZ").timetuple())


def too_late(hour_text, arrived_seconds, allowed_lateness_seconds):
    """Whether a row of the hour `hour_text` that arrived (by its element timestamp) at
    `arrived_seconds` is beyond the allowed lateness, so that a window of the hour would
    already have closed. Deterministic: it reads only the row and its own timestamp, so a
    replayed bundle decides the same, and such rows are reported instead of being dropped
    silently by the runner."""
    return arrived_seconds - (hour_seconds(hour_text) + 3600) > allowed_lateness_seconds


def merged_row(key, partial: Partial) -> dict:
    """The one row a key's rows become: other columns as text, sums as `Decimal`."""
    hour, _, others = json.loads(key)
    row = {cbf.USAGE_START: hour}
    if partial.usage_end is not None:
        row[cbf.USAGE_END] = partial.usage_end
    row.update((column, text) for column, text in others)
    row.update(sorted(partial.sums.items()))
    return row


def hour_of_row(row) -> Optional[str]:
    """The UTC hour start of a row's usage, or None when it cannot be read."""
    try:
        return hour_start(_timestamp(cbf.USAGE_START, row.get(cbf.USAGE_START)))
    except Unreadable:
        return None
