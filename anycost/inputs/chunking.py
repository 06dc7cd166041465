"""Chunks: the unit the pipeline shuffles, a batch's rows of one (connection, month).

A chunk carries its rows as JSON (compressed), each row's byte length, the exact cost
total and its source position, so that after the shuffle the sink can put chunks back in
input order and cut bodies by cumulative length, and the planner can work from lengths
alone. No Beam, no HTTP.
"""
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from anycost.inputs import values

# Rows that cross a shuffle (streaming panes) or go to object storage are LZ4-compressed:
# JSON shrinks about 5x at ~700 MB/s, which cuts the bytes Dataflow bills and moves. Chunk
# files on a local disk stay plain (`group(compress=False)`; see anycost.inputs.chunk_files).
ROWS_CODEC = "lz4" if pa.Codec.is_available("lz4") else ""


class Chunk(NamedTuple):
    """Rows of one (connection, month) from one batch, serialised and ready to pack.

    `rows` is the JSON of each row followed by a comma, concatenated, compressed with
    `codec` ("" for none); `json_rows()` gives them back. `lengths` is the byte length
    of each row (int32, native order). `order` sorts chunks back into input order after a
    shuffle; None means the rows have no source position (rows from a user's pipeline), and
    `anycost.bodies.packing` then sorts the stream-month's rows canonically instead. `hours`
    (uint16 hour-of-month per row) is filled for replace_hourly.
    """
    order: tuple
    row_count: int
    rows: bytes
    lengths: bytes
    cost_total: str
    hours: bytes
    codec: str = ""
    rows_size: int = 0  # uncompressed size of `rows`
    resource_ids_cut: int = 0  # rows whose resource/id CloudZero will cut (see normalise)
    resource_id_example: str = ""  # the first of them
    source_file: str = ""  # the file the rows came from ("" for rows of a user's pipeline)

    def json_rows(self):
        if not self.codec:
            return self.rows
        return pa.decompress(self.rows, self.rows_size, codec=self.codec, asbytes=True)


def group(rows, connection, month, cost, usage_start, order, compress=True):
    """Split the good rows of a batch by (connection, month) into chunks, their rows
    compressed with ROWS_CODEC when `compress`.

    One stable sort by key and one gather, then zero-copy slices: the cost does not grow
    with the number of streams in the batch."""
    codec = ROWS_CODEC if compress else ""
    keys = pc.binary_join_element_wise(connection, month, "|").dictionary_encode()
    names = keys.dictionary.to_pylist()
    codes = keys.indices.to_numpy(zero_copy_only=False)
    if len(names) > 1:
        ranks = np.argsort(np.argsort(names))  # code -> position of its key in sorted order
        sort = np.argsort(ranks[codes], kind="stable")
        take = pa.array(sort)
        rows, cost = rows.take(take), cost.take(take)
        usage_start = None if usage_start is None else usage_start.take(take)
        counts = np.bincount(ranks[codes], minlength=len(names))
    else:
        counts = np.array([len(codes)])
    chunks, start = [], 0
    for index, key in enumerate(sorted(names)):
        size = int(counts[index])
        part = [a if a is None else a.slice(start, size) for a in (rows, cost, usage_start)]
        connection_id, month_text = key.split("|")
        chunk_order = None if order is None else order + (index,)
        chunks.append(((connection_id, month_text), _chunk(chunk_order, *part, codec)))
        start += size
    return chunks


def _chunk(order, rows, cost, usage_start, codec):
    offsets = np.frombuffer(rows.buffers()[1], np.int32, len(rows) + 1, rows.offset * 4)
    data = rows.buffers()[2][offsets[0]:offsets[-1]]
    size = offsets[-1] - offsets[0]
    data = pa.compress(data, codec=codec, asbytes=True) if codec else data.to_pybytes()
    hours = b""
    if usage_start is not None:
        day = pc.cast(pc.utf8_slice_codeunits(usage_start, 8, 10), pa.uint16())
        hour = pc.cast(pc.utf8_slice_codeunits(usage_start, 11, 13), pa.uint16())
        hours = pc.add(pc.multiply(pc.subtract(day, 1), 24), hour).to_numpy().astype(np.uint16).tobytes()
    return Chunk(order, len(rows), data, np.diff(offsets).astype(np.int32).tobytes(),
                 values.decimal_text(decimal_sum(cost)), hours, codec, int(size))


def decimal_sum(column):
    """The exact sum of a column of plain decimal strings, as a Decimal.

    Arrow's decimal128 sums a column in one kernel call when the digits fit with room
    for a million additions; anything wider goes through Python's Decimal.
    """
    if len(column) == 0:
        return values.exact_sum([])
    point = pc.find_substring(column, ".")
    length = pc.utf8_length(column)
    scale = pc.max(pc.if_else(pc.less(point, 0), 0, pc.subtract(pc.subtract(length, point), 1))).as_py()
    digits = pc.max(pc.if_else(pc.less(point, 0), length, point)).as_py()
    if digits + scale + 7 <= 38:
        total = pc.sum(pc.cast(column, pa.decimal128(38, scale))).as_py()
        if total is not None:
            return total
    return values.exact_sum(column.to_pylist())
