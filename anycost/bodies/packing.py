"""Pack a stream-month's serialised rows into request bodies.

After the shuffle, the chunks of one (connection, month) come back in any order. They are
sorted by their source position (rows without one, from a user's pipeline, are sorted by
their bytes instead), checked against CloudZero's monthly limits, and cut into
bodies of at most `max_body_bytes` by cumulative byte length: no per-row Python objects,
and the same input always gives byte-identical bodies and idempotency keys.
No Beam, no HTTP.
"""
import dataclasses
import hashlib
import re
from typing import List, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from anycost import cbf
from anycost.inputs import values
from anycost.wire import BODY_SUFFIX, body_prefix


@dataclasses.dataclass(frozen=True)
class PlannedBody:
    """One request body, with the identity that makes its retries and reruns safe."""
    connection_id: str
    month: str
    operation: str
    seq: int  # 1-based position within the stream-month
    count: int  # bodies in the stream-month
    row_count: int
    body: bytes
    idempotency_key: str

    @property
    def byte_count(self):
        return len(self.body)

    def describe(self):
        return f"{self.connection_id} {self.month} body {self.seq}/{self.count}"

    def key_for(self, generation):
        """The body's idempotency key of `generation` (0 is `idempotency_key`)."""
        return generation_key(self.idempotency_key, generation)


@dataclasses.dataclass(frozen=True)
class StreamMonthPlan:
    """Everything known about a stream-month before sending: its bodies, or why it is refused."""
    connection_id: str
    month: str
    row_count: int
    row_bytes: int
    cost_total: str
    bodies: List[PlannedBody]
    refused: Optional[str] = None
    body_count: int = 0
    body_bytes: int = 0  # the exact bytes of all its bodies
    resource_ids_cut: int = 0  # rows whose resource/id CloudZero will cut to a type and a name
    resource_id_example: str = ""


def idempotency_key(connection_id, month, operation, seq, body, generation=0):
    """sha256 of what the drop is: the body's identity, and its key of generation 0.
    `seq` keeps two identical bodies of one month distinct, so that repeated rows are
    summed, not mistaken for a retry. Later generations (see `anycost.delivery.retry.KeyGeneration`)
    derive from it, so every run walks the same sequence of keys."""
    digest = hashlib.sha256()
    for part in (connection_id, month, operation, str(seq)):
        digest.update(part.encode() + b"\n")
    digest.update(body)
    return generation_key(digest.hexdigest(), generation)


def generation_key(identity_key, generation):
    """Key `generation` of the body whose generation-0 key is `identity_key`."""
    if generation == 0:
        return identity_key
    return hashlib.sha256(b"%s\ngeneration %d" % (identity_key.encode(), generation)).hexdigest()


class LazyBodies:
    """A stream-month's bodies, built one at a time as they are taken, in order.

    The sender takes a body, posts it and only then takes the next, so a connection's first
    request waits for one body, not its month's, and a connection holds one body in memory.
    It has a length, like the list it stands for; iterating again builds the bodies again
    (byte-identical)."""

    def __init__(self, count, build):
        self._count, self._build = count, build

    def __len__(self):
        return self._count

    def __iter__(self):
        return self._build()

    def __eq__(self, other):
        return list(self) == list(other)

    def __repr__(self):
        return f"LazyBodies({self._count})"


def plan_stream_month(connection_id, month, chunks, operation, max_body_bytes,
                      with_bodies=True, lazy=False) -> StreamMonthPlan:
    """Sort the chunks into input order, check the monthly limits, and cut bodies.

    The layout needs only the chunks' row lengths (and hours), so the pipeline can plan
    every month from small metadata before the gate opens (`with_bodies=False`), then
    build the same bodies from the full chunks when sending. Chunks without a source
    position are put in canonical order only when bodies are built (the order needs the
    rows); a refusal never depends on the order, but their plan without bodies may count
    the bodies differently. `lazy`: the bodies of rows in file order are a `LazyBodies`,
    built as they are taken (rows put in another order are built at once: the order needs
    the whole month)."""
    canonical = any(chunk.order is None for chunk in chunks)
    if not canonical:
        chunks = sorted(chunks, key=lambda chunk: chunk.order)
    lengths = np.concatenate([np.frombuffer(c.lengths, np.int32) for c in chunks]).astype(np.int64)
    row_count = int(len(lengths))
    row_bytes = int(lengths.sum()) - row_count  # without the separating commas
    cost_total = values.decimal_text(values.exact_sum(c.cost_total for c in chunks))

    cut = sum(c.resource_ids_cut for c in chunks)
    example = next((c.resource_id_example for c in chunks if c.resource_ids_cut), "")

    def refuse(reason):
        return StreamMonthPlan(connection_id, month, row_count, row_bytes, cost_total, [], reason,
                               resource_ids_cut=cut, resource_id_example=example)

    if row_count > cbf.MAX_ROWS_PER_STREAM_MONTH:
        return refuse(f"{row_count} rows: CloudZero holds at most {cbf.MAX_ROWS_PER_STREAM_MONTH:,} "
                      "rows per stream and month")
    if row_bytes > cbf.MAX_BYTES_PER_STREAM_MONTH:
        return refuse(f"{row_bytes} bytes of rows: CloudZero holds at most "
                      f"{cbf.MAX_BYTES_PER_STREAM_MONTH:,} bytes per stream and month")

    rows, hours = None, None
    if operation == "replace_hourly":
        hours = np.concatenate([np.frombuffer(c.hours, np.uint16) for c in chunks])
    if canonical and with_bodies:
        rows, permutation = canonical_order(joined_rows(chunks, int(lengths.sum())), lengths)
        lengths = lengths[permutation]
        hours = None if hours is None else hours[permutation]
    cuts, order = None, None
    if operation == "replace_hourly":
        order = _hour_order(hours)
        if order is not None:
            hours = hours[order]
        cuts = np.append(np.flatnonzero(np.diff(hours)) + 1, row_count)
    prefix = body_prefix(month, operation)
    room = max_body_bytes - len(prefix) - len(BODY_SUFFIX) + 1  # the last row drops its comma
    spans = cut_bodies(lengths if order is None else lengths[order], room, cuts)
    if spans is None:
        what = "one UTC hour" if operation == "replace_hourly" else "a row"
        return refuse(f"{what} holds more than fits in one body of {max_body_bytes} bytes")
    if operation == "replace_drop" and len(spans) > 1:
        return refuse(f"replace_drop replaces the whole month, so the month must fit in one body; "
                      f"it needs {len(spans)} bodies of at most {max_body_bytes} bytes. "
                      "Use --operation replace_hourly or sum instead")
    ends = np.cumsum(lengths)  # the same total whatever the row order
    body_bytes = int(ends[-1]) - len(spans) + len(spans) * (len(prefix) + len(BODY_SUFFIX)) if spans else 0
    plan = StreamMonthPlan(connection_id, month, row_count, row_bytes, cost_total, [], None, len(spans), body_bytes,
                           cut, example)
    if not with_bodies:
        return plan

    if rows is None and order is not None:
        rows = joined_rows(chunks, int(lengths.sum()))
    if order is not None:
        rows, lengths = _reorder_rows(rows, lengths, order)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    byte_spans = [(int(offsets[start]), int(offsets[end]) - 1) for start, end in spans]  # the last comma dropped

    def planned_bodies():
        texts = (_bodies_from_chunks(chunks, byte_spans, prefix) if rows is None
                 else (b"".join((prefix, memoryview(rows)[lo:hi], BODY_SUFFIX)) for lo, hi in byte_spans))
        for seq, ((start, end), body) in enumerate(zip(spans, texts), 1):
            yield PlannedBody(connection_id, month, operation, seq, len(spans), end - start, body,
                              idempotency_key(connection_id, month, operation, seq, body))
    if lazy and rows is None:
        return dataclasses.replace(plan, bodies=LazyBodies(len(spans), planned_bodies))
    return dataclasses.replace(plan, bodies=list(planned_bodies()))


def _bodies_from_chunks(chunks, byte_spans, prefix):
    """Each body's bytes, gathered straight from the chunks' rows (in input order), one copy.

    Each chunk's rows are read back once and let go as soon as the bodies they reach are
    built: no buffer of the whole month, whose allocation and copy cost more than the
    bodies' own (a fresh mapping of megabytes for every month; see `anycost.memory`).
    ValueError when a chunk holds other than the bytes its row lengths say."""
    remaining = iter(chunks)
    piece, piece_start = memoryview(b""), 0  # the current chunk's rows, and where they start in the month
    for low, high in byte_spans:
        parts, position = [prefix], low
        while position < high:
            if position >= piece_start + len(piece):
                piece_start += len(piece)
                chunk = next(remaining, None)
                if chunk is None:
                    raise ValueError(f"the chunks hold {piece_start} bytes of rows, their row lengths say more")
                piece = _chunk_rows(chunk)
                continue
            end = min(high, piece_start + len(piece))
            parts.append(piece[position - piece_start:end - piece_start])
            position = end
        parts.append(BODY_SUFFIX)
        yield b"".join(parts)
    for chunk in remaining:  # only a last comma can be left; still check what the chunks hold
        _chunk_rows(chunk)


def _chunk_rows(chunk):
    rows = chunk.json_rows()
    expected = int(np.frombuffer(chunk.lengths, np.int32).sum(dtype=np.int64))
    if len(rows) != expected:
        raise ValueError(f"a chunk holds {len(rows)} bytes of rows, its row lengths say {expected}")
    return memoryview(rows)


def joined_rows(chunks, size):
    """The chunks' rows, concatenated into one buffer of `size` bytes that is filled one chunk
    at a time: a chunk's rows (read back from its chunk file) are let go as soon as they are
    copied, so building a month never holds its rows twice."""
    rows, position = bytearray(size), 0
    for chunk in chunks:
        piece = chunk.json_rows()
        rows[position:position + len(piece)] = piece
        position += len(piece)
    if position != size:
        raise ValueError(f"the chunks hold {position} bytes of rows, their lengths say {size}")
    return rows


# A row's cost as the packer writes it. Inside a JSON string every quote is escaped, so the
# unescaped `"cost/cost":"` can only be the key itself.
_ROW_COST = re.compile(rb'"%s":"([^"]*)"' % re.escape(cbf.COST.encode()))


def body_cost(body):
    """The exact total cost of a body's rows, as plain text (`15.00`), read from its bytes:
    for the bodies a run could not deliver, so a report can tell a month's delivered cost
    from the rest without keeping a cost per body."""
    return values.decimal_text(values.exact_sum(cost.decode() for cost in _ROW_COST.findall(body)))


def canonical_order(rows, lengths):
    """Rows (each `{...},`, concatenated) sorted by their bytes: (sorted rows, permutation).

    For rows with no source position, such as a user's pipeline gives, in any order and
    bundling: sorted, the same rows give byte-identical bodies and keys. Every row's JSON
    opens with `time/usage_start`, so the order is by time first, and each UTC hour is one
    contiguous run, as replace_hourly needs. One Arrow sort and one gather."""
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    array = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(lengths),
                                             [None, pa.py_buffer(offsets), pa.py_buffer(rows)])
    permutation = pc.sort_indices(array).to_numpy()
    ordered = array.take(pa.array(permutation))
    size = int(offsets[-1])
    start = int(np.frombuffer(ordered.buffers()[1], np.int64, 1, ordered.offset)[0])
    return memoryview(ordered.buffers()[2])[start:start + size], permutation


def cut_bodies(lengths, room, cuts=None):
    """Greedy spans [start, end) whose lengths sum to at most `room`, ending only at `cuts`
    (every row boundary when None). None when some span cannot be made to fit."""
    count = len(lengths)
    if count == 0:
        return []
    ends = np.cumsum(lengths)
    allowed = np.arange(1, count + 1) if cuts is None else np.asarray(cuts)
    allowed_ends = ends[allowed - 1]
    spans, start, consumed = [], 0, 0
    while start < count:
        index = int(np.searchsorted(allowed_ends, consumed + room, side="right")) - 1
        if index < 0 or allowed[index] <= start:
            return None
        end = int(allowed[index])
        spans.append((start, end))
        start, consumed = end, int(ends[end - 1])
    return spans


def _hour_order(hours):
    """The stable order that makes each hour of the month one contiguous run (None: already so)."""
    if len(hours) == 0 or np.all(hours[:-1] <= hours[1:]):
        return None
    return np.argsort(hours, kind="stable")


def _reorder_rows(rows, lengths, order):
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    view = memoryview(rows)
    return b"".join(view[offsets[i]:offsets[i + 1]] for i in order), lengths[order]
