"""The UTC hour as the unit of a stream: the pure half of `transforms.streaming`.

An unbounded write groups a connection's rows by the UTC hour of `time/usage_start`. Each
pane of an hour (the hour so far, or its late rows) becomes one `HourPane`, and the sender
decides with `HourBook` whether to send it, skip it as superseded, or hold it back, then
builds its bodies with `pane_bodies`. Everything here is a function of the pane and the
book, never of arrival order, so that a bundle the runner replays builds byte-identical
bodies under the same idempotency keys. No Beam, no HTTP.
"""
import dataclasses
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from anycost.inputs import hourly
from anycost.bodies import packing
from anycost.wire import BODY_SUFFIX, body_prefix

REPLACE_HOURLY, SUM = "replace_hourly", "sum"
# Every rendered row opens with `{"time/usage_start":"YYYY-MM-DDTHH`: its hour is at a fixed place.
_OPENING = b'{"time/usage_start":"'
_HOUR_AT = len(_OPENING)
_HOUR_CHARS = len("YYYY-MM-DDTHH")
HOUR_SECONDS = 3600


class HourPart(NamedTuple):
    """Some rows of one (connection, hour), before the hour's window groups them.

    `rows` is JSON rows each followed by a comma, concatenated; `lengths` their byte
    lengths (int32). `rejected` counts the hour's rows refused by validation."""
    rows: bytes
    lengths: bytes
    rejected: int = 0


class HourPane(NamedTuple):
    """One pane of one (connection, hour): what the sender acts on."""
    connection_id: str
    hour: str  # the hour's start, `2024-09-01T05:00:00Z`
    pane: int  # the pane's index in its window: 0, then 1, 2... for late firings
    rows: bytes
    lengths: bytes
    rejected: int

    @property
    def month(self):
        return self.hour[:7]

    @property
    def row_count(self):
        return len(self.lengths) // 4

    def describe(self):
        return f"{self.connection_id} hour {self.hour} (pane {self.pane})"


def hour_text(hour13):
    """`2024-09-01T05` -> `2024-09-01T05:00:00Z`."""
    return hour13 + ":00:00Z"


def split_by_hour(rows: bytes, lengths: np.ndarray) -> List[Tuple[str, HourPart]]:
    """Rendered rows (one chunk of one connection) split by the UTC hour of their usage start.

    Vectorised: the hour is read from a fixed place in each row's JSON."""
    if not len(lengths):
        return []
    lengths = np.asarray(lengths, np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    data = np.frombuffer(rows, np.uint8)
    opening = data[offsets[:-1, None] + np.arange(_HOUR_AT)]
    if not (opening == np.frombuffer(_OPENING, np.uint8)).all():  # normalise's layout is what we read
        raise ValueError("rendered rows must open with their time/usage_start")
    picks = offsets[:-1, None] + np.arange(_HOUR_AT, _HOUR_AT + _HOUR_CHARS)
    hours = data[picks].copy().view(f"S{_HOUR_CHARS}").ravel()
    names, inverse = np.unique(hours, return_inverse=True)
    parts = []
    if len(names) == 1:
        return [(hour_text(names[0].decode()), HourPart(bytes(rows), lengths.astype(np.int32).tobytes()))]
    view = memoryview(rows)
    for index, name in enumerate(names):
        members = np.flatnonzero(inverse == index)
        part_rows = b"".join(view[offsets[i]:offsets[i + 1]] for i in members)
        parts.append((hour_text(name.decode()), HourPart(part_rows, lengths[members].astype(np.int32).tobytes())))
    return parts


def join_parts(connection_id, hour, pane, parts) -> HourPane:
    """The parts a window pane grouped, as one pane; the rows' order is settled later."""
    parts = list(parts)
    return HourPane(connection_id, hour, pane, b"".join(p.rows for p in parts),
                    b"".join(p.lengths for p in parts), sum(p.rejected for p in parts))


@dataclasses.dataclass
class HourEntry:
    """What the sender remembers of one hour of one connection."""
    last_pane: int = -1  # the newest pane acted on
    rejected: int = 0  # rows of the hour refused by validation, as far as known
    held: Optional[str] = None  # why the hour is held back, once it is


SEND, SUPERSEDED, HELD = "send", "superseded", "held"


class HourBook:
    """The sender's per-connection memory of hours, kept in Beam state: which pane of each
    hour was acted on last, and which hours are held back. Hours are forgotten once no pane
    of theirs can come any more (`expired`)."""

    def __init__(self, operation, max_rejected_rows, allowed_lateness_seconds,
                 entries: Optional[Dict[str, HourEntry]] = None):
        self._operation = operation
        self._limit = max_rejected_rows
        self._lateness = allowed_lateness_seconds
        self.entries = dict(entries or {})

    def decide(self, pane: HourPane) -> Tuple[str, Optional[str]]:
        """(SEND | SUPERSEDED | HELD, the reason when held); records the pane.

        replace_hourly panes accumulate: each holds the whole hour so far, and an older pane
        arriving after a newer one must not replace it. sum panes discard: each holds only
        new rows, all of them to be sent once, and the hour's rejects add up across panes."""
        entry = self.entries.setdefault(pane.hour, HourEntry())
        if self._operation == REPLACE_HOURLY:
            if pane.pane <= entry.last_pane:
                return SUPERSEDED, None
            entry.rejected = max(entry.rejected, pane.rejected)
        else:
            entry.rejected += pane.rejected
        entry.last_pane = max(entry.last_pane, pane.pane)
        if entry.held is None and entry.rejected > self._limit:
            entry.held = (f"{pane.connection_id} hour {pane.hour} has {entry.rejected} rejected row(s), more than "
                          f"max_rejected_rows {self._limit}: the hour is held back whole (see the rejected rows)")
        return (HELD, entry.held) if entry.held else (SEND, None)

    def expiry(self, hour):
        """Seconds since the epoch after which no pane of `hour` can arrive: the end of the
        hour plus the allowed lateness, plus an hour of margin for panes in flight."""
        return hourly.hour_seconds(hour) + HOUR_SECONDS + self._lateness + HOUR_SECONDS

    def forget_expired(self, now_seconds):
        """Drop the hours whose panes can no longer come; the earliest expiry left, or None."""
        self.entries = {hour: e for hour, e in self.entries.items() if self.expiry(hour) > now_seconds}
        return self.next_expiry()

    def next_expiry(self):
        return min((self.expiry(hour) for hour in self.entries), default=None)


def pane_bodies(pane: HourPane, operation, max_body_bytes) -> Tuple[List[packing.PlannedBody], Optional[str]]:
    """(bodies, None) or ([], why the pane cannot be sent).

    Rows are sorted by their bytes first, so the bodies are a pure function of the pane's
    rows, whatever order the runner grouped them in. The key names the hour and the pane:
    the same pane always gets the same key (a replayed bundle is a replay to CloudZero),
    and two panes, even with identical rows, are two deliveries. A replace_hourly pane must
    fit one body: a second body of the same hour would replace the first."""
    if not pane.row_count:
        return [], None
    lengths = np.frombuffer(pane.lengths, np.int32).astype(np.int64)
    rows, permutation = packing.canonical_order(pane.rows, lengths)
    lengths = lengths[permutation]
    prefix = body_prefix(pane.month, operation)
    room = max_body_bytes - len(prefix) - len(BODY_SUFFIX) + 1  # the last row drops its comma
    spans = packing.cut_bodies(lengths, room, None if operation == SUM else [len(lengths)])
    if spans is None:
        what = "the hour's rows" if operation == REPLACE_HOURLY else "a row"
        return [], f"{pane.describe()}: {what} do not fit in one body of {max_body_bytes} bytes"
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    bodies = []
    for seq, (start, end) in enumerate(spans, 1):
        body = b"".join((prefix, rows[offsets[start]:offsets[end] - 1], BODY_SUFFIX))
        identity = f"{pane.hour} pane {pane.pane} body {seq}"
        bodies.append(packing.PlannedBody(
            pane.connection_id, pane.month, operation, seq, len(spans), end - start, body,
            packing.idempotency_key(pane.connection_id, pane.month, operation, identity, body)))
    return bodies, None


def pane_plan(pane: HourPane, operation, max_body_bytes) -> packing.StreamMonthPlan:
    """The pane as the delivery engine's unit: one plan of its month, with the pane's bodies
    (`pane_bodies`), or refused with the reason. The cost total is not read for a pane."""
    bodies, refused = pane_bodies(pane, operation, max_body_bytes)
    return packing.StreamMonthPlan(pane.connection_id, pane.month, pane.row_count, len(pane.rows) - pane.row_count,
                                   "", bodies, refused, len(bodies), sum(b.byte_count for b in bodies))


def pane_label(pane: HourPane):
    """Names the pane's dry-run files: `2024-09-01T05-pane0`."""
    return f"{pane.hour[:13]}-pane{pane.pane}"
