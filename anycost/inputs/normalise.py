"""Validate and render a batch of CBF rows, column by column, into JSON lines.

Input: an Arrow record batch whose columns are CBF text (see `anycost.inputs.typed_text` for how
Parquet types become text). Output: the good rows as JSON objects grouped by
(connection id, UTC month), and one reject record per bad row.

The work is done with Arrow kernels over whole columns; only unusual values (exponent
numbers, timestamps with offsets) and rejected rows are touched one by one in Python.
No Beam, no HTTP.
"""
import dataclasses
import json
import re
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from anycost import cbf, wire
from anycost.config import RowSettings
from anycost.inputs import chunking, typed_text, values
from anycost.inputs.dead_letter import reject_record

_STRING = pa.string()
_NULL_STRING = pa.scalar(None, _STRING)
_CONTROL_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"
_FAST_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"
_FAST_NUMBER = "^" + values.PLAIN_NUMBER.pattern + "$"
_CONNECTION_ID = "^" + cbf.CONNECTION_ID_PATTERN.pattern + "$"


@dataclasses.dataclass(frozen=True)
class SourceBatch:
    """Where a batch came from: enough to name a row to a person and to order chunks."""
    file: str
    order: tuple  # sorts batches back into input order: (file index, split, batch index)
    row_numbers: np.ndarray  # 1-based data row number in the file (header not counted) per row


@dataclasses.dataclass
class NormalisedBatch:
    chunks: list  # [((connection_id, month), chunking.Chunk)]
    rejects: list  # [dict] dead-letter records
    rows_in: int


def normalise_batch(batch: pa.RecordBatch, source: SourceBatch, settings: RowSettings) -> NormalisedBatch:
    """Validate every row of `batch`, render the good ones as JSON and group them."""
    n = batch.num_rows
    if n == 0:
        return NormalisedBatch([], [], 0)
    problems = _Problems(n)
    kinds = {field.name: (field.metadata or {}).get(typed_text.KIND_KEY) for field in batch.schema}
    columns = {name: batch.column(i) if kinds[name] else _blank_to_null(batch.column(i))
               for i, name in enumerate(batch.schema.names)}
    connection = _connection_ids(columns, settings, problems)

    rendered = {}
    for name, column in columns.items():
        if name == settings.stream_column:
            continue
        # A typed Parquet timestamp or number is already valid, plain text: nothing to check.
        if name in cbf.TIMESTAMP_COLUMNS and kinds[name] != typed_text.TIMESTAMP:
            column = _render_timestamps(name, column, problems)
        elif name in cbf.NUMBER_COLUMNS and kinds[name] != typed_text.NUMBER:
            column = _render_numbers(name, column, problems)
        rendered[name] = column

    for required in cbf.REQUIRED_COLUMNS:
        column = columns.get(required)
        missing = np.ones(n, bool) if column is None else _mask(pc.is_null(column))
        problems.add(missing, f"{required} is required and is empty")
    _check_lineitem_type(rendered, problems)
    _check_tags_have_resource_id(rendered, problems)

    order = cbf.canonical_column_order(rendered)
    rows = _json_rows([(name, rendered[name]) for name in order], problems,
                      plain={name for name, kind in kinds.items() if kind})
    _check_row_fits(rows, settings, problems)

    rejects = problems.records(batch, source)
    good = ~problems.any
    if not good.any():
        return NormalisedBatch([], rejects, n)
    keep = pa.array(good)

    def kept(column):  # no copy when every row is good, the common case
        return column if not rejects else pc.filter(column, keep)

    usage_start = kept(rendered[cbf.USAGE_START])
    month = pc.utf8_slice_codeunits(usage_start, 0, 7)
    chunks = chunking.group(
        rows=kept(rows),
        connection=kept(connection),
        month=month,
        cost=kept(rendered[cbf.COST]),
        usage_start=usage_start if settings.operation == "replace_hourly" else None,
        order=source.order,
        compress=settings.compress_rows,
    )
    resource_id = rendered.get(cbf.RESOURCE_ID)
    if resource_id is not None:
        chunks = _note_cut_resource_ids(chunks, kept(connection), month, kept(resource_id))
    if source.file:  # the ledger keeps which files a delivered body's month came from
        chunks = [(key, chunk._replace(source_file=source.file)) for key, chunk in chunks]
    return NormalisedBatch(chunks, rejects, n)


def _note_cut_resource_ids(chunks, connection, month, resource_id):
    """Count, per chunk, the rows whose resource/id has more than two parts separated by
    `/` or `:`. CloudZero keeps a type and a name and drops the rest: not an error, but the
    report says so, with an example. Arrow kernels only; nothing per row in Python."""
    cut = pc.greater_equal(pc.count_substring_regex(resource_id, "[/:]"), 2)
    if not pc.any(cut).as_py():
        return chunks
    found = (pa.table({"c": connection, "m": month, "id": resource_id}).filter(pc.fill_null(cut, False))
             .group_by(["c", "m"], use_threads=False).aggregate([("id", "count"), ("id", "first")]))
    notes = {(c, m): (count, first) for c, m, count, first in
             zip(*(found.column(name).to_pylist() for name in ("c", "m", "id_count", "id_first")))}
    return [(key, chunk._replace(resource_ids_cut=notes[key][0], resource_id_example=notes[key][1])
             if key in notes else chunk) for key, chunk in chunks]


class _Problems:
    """Per-row reasons, kept as boolean masks until a row is known to be rejected."""

    def __init__(self, n):
        self.any = np.zeros(n, bool)
        self._rules = []  # (mask, reason or per-row reason array)

    def add(self, mask, reason):
        if mask.any():
            self.any |= mask
            self._rules.append((mask, reason))

    def add_per_distinct(self, distinct_problems, indices):
        """Carry problems found on distinct values over to the rows holding those values."""
        if not distinct_problems.any.any():
            return
        valid = _mask(pc.is_valid(indices))
        rows = pc.fill_null(indices, 0).to_numpy(zero_copy_only=False)
        for mask, reason in distinct_problems._rules:
            self.add(mask[rows] & valid, reason if isinstance(reason, str) else reason[rows])

    def records(self, batch, source):
        bad_rows = np.flatnonzero(self.any)
        if not len(bad_rows):
            return []
        originals = batch.take(pa.array(bad_rows)).to_pylist()
        records = []
        for position, original in zip(bad_rows, originals):
            reasons = [reason if isinstance(reason, str) else reason[position]
                       for mask, reason in self._rules if mask[position]]
            kept = {k: v for k, v in original.items() if v is not None and v != ""}
            records.append(reject_record(source.file, int(source.row_numbers[position]),
                                         "; ".join(reasons), kept))
        return records


def _mask(boolean_array):
    """Arrow booleans (nulls count as False) as a numpy mask."""
    return pc.fill_null(boolean_array, False).to_numpy(zero_copy_only=False)


def _blank_to_null(column):
    """Empty text means absent: CBF leaves empty optional values out of the row."""
    if column.null_count == len(column):
        return column
    return pc.if_else(pc.equal(column, ""), _NULL_STRING, column)


def _connection_ids(columns, settings, problems):
    n = problems.any.shape[0]
    if settings.stream_column is None:
        return pa.array([settings.connection_id], _STRING).take(pa.array(np.zeros(n, np.int64)))
    ids = columns.get(settings.stream_column)
    if ids is None:
        ids = pa.nulls(n, _STRING)
    problems.add(_mask(pc.is_null(ids)), f"{settings.stream_column} (the connection id) is empty")
    bad = _mask(pc.invert(pc.match_substring_regex(ids, _CONNECTION_ID)))
    problems.add(bad, f"{settings.stream_column} is not a valid connection id ({cbf.CONNECTION_ID_RULE})")
    return ids


def _render_slow(name, column, needs_slow, render, problems):
    """Render the values `needs_slow` marks one by one; failures become row problems."""
    positions = np.flatnonzero(needs_slow)
    if not len(positions):
        return column
    texts = column.take(pa.array(positions)).to_pylist()
    replacements, failed, reasons = [], np.zeros(len(column), bool), np.empty(len(column), object)
    for position, text in zip(positions, texts):
        try:
            replacements.append(render(text))
        except values.InvalidValue as err:
            replacements.append(None)
            failed[position] = True
            reasons[position] = f"{name}: {err}"
    problems.add(failed, reasons)
    mask = np.zeros(len(column), bool)
    mask[positions] = True
    return pc.replace_with_mask(column, pa.array(mask), pa.array(replacements, _STRING))


def _render_timestamps(name, column, problems):
    """Validate and render each distinct timestamp once: rows share few (744 hours a month)."""
    encoded = column.dictionary_encode()
    distinct = encoded.dictionary
    fast = pc.match_substring_regex(distinct, _FAST_TIMESTAMP)
    # strptime alone accepts 2024-02-30 (it rolls over); the round trip rejects it.
    parsed = pc.strptime(distinct, format="%Y-%m-%dT%H:%M:%SZ", unit="s", error_is_null=True)
    exact = pc.equal(pc.strftime(parsed, format="%Y-%m-%dT%H:%M:%SZ"), distinct)
    needs_slow = ~_mask(pc.and_(fast, exact))
    distinct_problems = _Problems(len(distinct))
    rendered = _render_slow(name, distinct, needs_slow, values.render_timestamp, distinct_problems)
    problems.add_per_distinct(distinct_problems, encoded.indices)
    return rendered.take(encoded.indices)


def _render_numbers(name, column, problems):
    # Plain and not too wide; anything else (exponents, `+`, spaces, 500-digit text) goes
    # through values.render_number, which renders or rejects it.
    plain = _mask(pc.and_(pc.match_substring_regex(column, _FAST_NUMBER),
                          pc.less_equal(pc.utf8_length(column), values.MAX_NUMBER_CHARS)))
    needs_slow = ~plain & _mask(pc.is_valid(column))
    return _render_slow(name, column, needs_slow, values.render_number, problems)


def _check_lineitem_type(rendered, problems):
    column = rendered.get(cbf.LINEITEM_TYPE)
    if column is None:
        return
    allowed = pa.array(sorted(cbf.LINEITEM_TYPES), _STRING)
    bad = _mask(pc.and_(pc.is_valid(column), pc.invert(pc.is_in(column, value_set=allowed))))
    if bad.any():  # the reason names each bad row's value; only those rows are touched
        reasons = np.empty(len(bad), object)
        positions = np.flatnonzero(bad)
        for position, value in zip(positions, column.take(pa.array(positions)).to_pylist()):
            reasons[position] = (f"{cbf.LINEITEM_TYPE} {value!r} is not one of: "
                                 f"{', '.join(sorted(cbf.LINEITEM_TYPES))}")
        problems.add(bad, reasons)


def _check_tags_have_resource_id(rendered, problems):
    tags = [rendered[name] for name in rendered if cbf.is_tag_column(name)]
    if not tags:
        return
    n = problems.any.shape[0]
    has_tag = np.zeros(n, bool)
    for column in tags:
        has_tag |= _mask(pc.is_valid(column))
    resource_id = rendered.get(cbf.RESOURCE_ID)
    no_id = np.ones(n, bool) if resource_id is None else _mask(pc.is_null(resource_id))
    problems.add(has_tag & no_id, f"a row with a resource/tag value needs a non-empty {cbf.RESOURCE_ID}")


def _json_escape(name, column, problems):
    """The column's text as the inside of a JSON string; control characters are problems.

    One scan says which of the bytes to escape the column holds; only those passes run, and
    most columns (ids, numbers, times) need none."""
    control, quote, backslash = _special_bytes(column)
    if control:
        problems.add(_mask(pc.match_substring_regex(column, _CONTROL_CHARS)), f"{name} contains a control character")
    for present, raw, escaped in ((backslash, "\\", "\\\\"), (quote, '"', '\\"'), (control, "\n", "\\n"),
                                  (control, "\r", "\\r"), (control, "\t", "\\t")):
        if present:  # the backslash first, so that no escape is escaped again
            column = pc.replace_substring(column, raw, escaped)
    return column


def _special_bytes(column):
    """(any control character, any `"`, any `\\`) in the column's values: a byte scan of the
    values buffer, far faster than a regular expression. UTF-8 never uses bytes below 0x80
    inside a multi-byte character, so a byte test is exact; bytes under a null slot can only
    say yes, which costs a pass that changes nothing, never a wrong row."""
    if len(column) == 0 or column.null_count == len(column):
        return False, False, False
    offsets = np.frombuffer(column.buffers()[1], np.int32, len(column) + 1, column.offset * 4)
    data = np.frombuffer(column.buffers()[2], np.uint8)[offsets[0]:offsets[-1]]
    return bool((data < 0x20).any()), bool((data == 0x22).any()), bool((data == 0x5C).any())


def _json_rows(named_columns, problems, plain=frozenset()):
    """Each row as `{"col":"value",...},` with absent values left out; one Arrow string array.

    `time/usage_start` comes first in the canonical order: every good row has it, so it
    opens the object without a comma, and each later value brings its own. A column with no empty value joins the
    row directly; one with gaps becomes a fragment that is null, then empty, where absent.
    Everything is concatenated by one kernel call. Columns in `plain` (numbers and times
    from typed columns) hold nothing to escape and are not scanned."""
    n = problems.any.shape[0]
    if not named_columns:  # no CBF column at all: every row is `{}` (and rejected as incomplete)
        return pa.array(["{},"] * n, _STRING)
    pieces, pending = [], "{"  # `pending`: literal text to put before the next piece
    for position, (name, column) in enumerate(named_columns):
        text = column if name in plain else _json_escape(name, column, problems)
        prefix = '%s"%s":"' % ("," if position else "", name)
        if text.null_count:
            if pending:
                pieces.append(pending)
            pieces.append(pc.binary_join_element_wise(prefix, text, '"', ""))
            pending = ""
        else:  # a value's closing quote and the next key go in as one literal: fewer pieces, a faster join
            pieces += [pending + prefix, text]
            pending = '"'
    pieces.append(pending + "},")
    return pc.binary_join_element_wise(*pieces, "", null_handling="replace", null_replacement="")


def _check_row_fits(rows, settings, problems):
    # Each row carries a trailing comma; the last row of a body drops it.
    room = settings.max_body_bytes - wire.envelope_bytes(settings.operation) + 1
    lengths = pc.binary_length(rows).to_numpy()
    too_big = lengths > room
    if too_big.any():
        reasons = np.empty(len(lengths), object)
        for position in np.flatnonzero(too_big):
            reasons[position] = (f"the row is {lengths[position] - 1} bytes of JSON and cannot fit in a body "
                                 f"of at most {settings.max_body_bytes} bytes")
        problems.add(too_big, reasons)

