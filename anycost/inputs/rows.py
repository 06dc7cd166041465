"""Rows from any pipeline (dicts, or typed Arrow record batches) as CBF text columns.

`WriteToAnyCost` takes rows from BigQuery, Pub/Sub or a user's own transforms. Their values
get exactly the text the file path gives them (see `anycost.inputs.typed_text`): `str` as is, `int`
as written, `float` as its shortest round-trip decimal without an exponent, `Decimal`
exactly and plain, `datetime` as UTC `...Z` (naive means UTC), `date` as midnight UTC, `None`
absent. A value of any other type (bool, bytes, list...), a non-finite number or a column
that is not CBF rejects its row with a reason; it never raises. Validation proper stays in
`anycost.inputs.normalise`, which takes the text batch from here.

The work is done column by column: an all-`str` column goes straight to `pa.array`, and
numbers and times of one type are converted by Arrow in one call. No Beam, no HTTP.
"""
import datetime as dt
import decimal
import itertools
import operator
from typing import List, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from anycost import cbf
from anycost.inputs import normalise, sources, typed_text
from anycost.inputs.values import MAX_NUMBER_CHARS
from anycost.config import RowSettings

_STRING = pa.string()
_UTC = dt.timezone.utc


class TextRows(NamedTuple):
    """The rows that have a CBF text form, and a reject record for each that has none.

    `batch` holds string columns (with `typed_text.KIND_KEY` metadata where the text is
    plain by construction), ready for `normalise.normalise_batch`. `rejects` are dicts
    `{"reason": ..., "values": {column: text}}`."""
    batch: pa.RecordBatch
    rejects: List[dict]


def reject(reason, row_values):
    """One rejected row as the write path reports it: the reason and the row's values."""
    return {"reason": reason, "values": row_values}


def rows_to_text(rows, extra_columns=(), cbf_columns_only=True) -> TextRows:
    """A list of dict rows as CBF text columns; `extra_columns` (the stream column) are kept
    as text although they are not CBF columns. With `cbf_columns_only` False (FOCUS rows)
    every column is kept as text."""
    n = len(rows)
    problems = _RowProblems(n)
    names, values = [], []
    for name, column in zip(*_columns_of(rows)):
        if isinstance(name, str):
            names.append(name)
            values.append(column)
        else:
            problems.add_rows([i for i, row in enumerate(rows) if name in row],
                              f"column name {name!r} is not text")
    columns, kinds, unrenderable = [], [], {}
    for name, column in zip(names, values):
        text, kind, bad = _column_to_text(name, column, problems)
        columns.append(text)
        kinds.append(kind)
        if bad is not None:
            unrenderable[name] = (column, bad)
    if cbf_columns_only:
        _reject_unknown_columns(names, columns, extra_columns, problems)
    batch = _text_batch(names, columns, kinds, n)

    def shown(position):
        """A rejected row's values: its text, or the repr of a value that has none."""
        shown_values = {}
        for name in names:
            value = rows[position].get(name)
            if value is None:
                continue
            if name in unrenderable and unrenderable[name][1][position]:
                shown_values[name] = repr(value)
            else:
                shown_values[name] = batch.column(name)[position].as_py()
        return shown_values

    return problems.split(batch, shown)


def _columns_of(rows):
    """(column names, a list of values per column, None where a row has no such key).

    Usually every row has the first row's keys: rows of one length that all hold them have
    exactly those keys, which is cheaper to check than gathering every row's key set."""
    first = list(rows[0]) if rows else []
    if len(set(map(len, rows))) == 1:
        try:
            return first, [list(map(operator.itemgetter(name), rows)) for name in first]
        except KeyError:
            pass
    key_sets = set(map(tuple, rows))
    names = list(dict.fromkeys(key for keys in key_sets for key in keys))
    everywhere = set.intersection(*map(set, key_sets)) if key_sets else set()
    return names, [list(map(operator.itemgetter(name), rows)) if name in everywhere
                   else [row.get(name) for row in rows] for name in names]


def record_batch_to_text(batch: pa.RecordBatch, extra_columns=()) -> TextRows:
    """A record batch with CBF columns of any Arrow type `typed_text` supports, as text.

    The fast path for big inputs: only the values of unsupported columns (bool, binary,
    lists) and rows in unknown columns are touched one by one, to reject their rows."""
    n = batch.num_rows
    problems = _RowProblems(n)
    names, columns, kinds = [], [], []
    for field, column in zip(batch.schema, batch.columns):
        problem = typed_text.type_problem(field.type)
        if problem:
            problems.add(_mask(pc.is_valid(column)), f"{field.name} {problem}")
            text, kind = pa.nulls(n, _STRING), None
        else:
            text, kind = typed_text.text_and_kind(column)
            if text.type != _STRING:  # large_string
                text = text.cast(_STRING)
            # Metadata already on the field (a batch that went through here) is kept.
            kind = kind or (field.metadata or {}).get(typed_text.KIND_KEY)
        names.append(field.name)
        columns.append(text)
        kinds.append(kind)
    _reject_unknown_columns(names, columns, extra_columns, problems)
    text_batch = _text_batch(names, columns, kinds, n)
    raw = {name: batch.column(name) for name in names}

    def shown(position):
        shown_values = {}
        for name in names:
            value = text_batch.column(name)[position].as_py()
            if value is None and raw[name][position].is_valid:
                value = repr(raw[name][position].as_py())
            if value is not None and value != "":
                shown_values[name] = value
        return shown_values

    return problems.split(text_batch, shown)


def _text_batch(names, columns, kinds, n):
    if not names:  # rows with no columns at all: an absent usage start, which normalise rejects
        names, columns, kinds = [cbf.USAGE_START], [pa.nulls(n, _STRING)], [None]
    fields = [pa.field(name, _STRING, metadata={typed_text.KIND_KEY: kind} if kind else None)
              for name, kind in zip(names, kinds)]
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))


def _reject_unknown_columns(names, columns, extra_columns, problems):
    """A value in a column CloudZero does not know would be dropped from the row: refuse it."""
    for name, column in zip(names, columns):
        if name in extra_columns:
            continue
        problem = cbf.column_problem(name)
        if problem:
            problems.add(_mask(pc.is_valid(column)), problem)


def _mask(boolean_array):
    return pc.fill_null(boolean_array, False).to_numpy(zero_copy_only=False)


class _RowProblems:
    """Reasons per row; rows with any reason leave the batch as reject records."""

    def __init__(self, n):
        self.any = np.zeros(n, bool)
        self._reasons = {}

    def add(self, mask, reason):
        self.add_rows(np.flatnonzero(mask), reason)

    def add_rows(self, positions, reason):
        for position in positions:
            self.any[position] = True
            self._reasons.setdefault(int(position), []).append(reason)

    def split(self, batch, shown):
        if not self._reasons:
            return TextRows(batch, [])
        rejects = [reject("; ".join(self._reasons[position]), shown(position))
                   for position in sorted(self._reasons)]
        return TextRows(batch.filter(pa.array(~self.any)), rejects)


# ----- one column of Python values ------------------------------------------------------------

_STR, _INT, _FLOAT, _DECIMAL, _DATETIME, _DATE, _NONE, _OTHER = range(8)
_KNOWN_TYPES = {str: _STR, int: _INT, float: _FLOAT, decimal.Decimal: _DECIMAL,
                dt.datetime: _DATETIME, dt.date: _DATE, type(None): _NONE}


def _type_code(value_type):
    """The rendering a value's type gets; subclasses (numpy.float64 is a float) count as
    their base, except bool, which is an int to Python but has no CBF form."""
    code = _KNOWN_TYPES.get(value_type)
    if code is not None:
        return code
    if issubclass(value_type, bool):
        return _OTHER
    for base in (str, dt.datetime, dt.date, float, int, decimal.Decimal):  # datetime before date
        if issubclass(value_type, base):
            return _KNOWN_TYPES[base]
    return _OTHER


def _column_to_text(name, column, problems):
    """(string array, kind, mask of values with no text form or None)."""
    types = set(map(type, column))
    if types <= {str, type(None)}:
        return pa.array(column, _STRING), None, None
    codes_of = {t: _type_code(t) for t in types}
    if len(types) == 1 or (len(types) == 2 and type(None) in types):
        (code,) = {c for c in codes_of.values() if c != _NONE} or {_NONE}
        if code == _NONE:
            return pa.nulls(len(column), _STRING), None, None
        if code != _OTHER:
            text, kind, bad = _render_group(name, code, column, problems, np.arange(len(column)),
                                            has_none=type(None) in types)
            return text, kind, bad
    codes = np.fromiter(map(codes_of.__getitem__, map(type, column)), np.int8, len(column))
    text = pa.nulls(len(column), _STRING)
    kinds, bad_all = set(), np.zeros(len(column), bool)
    for code in np.unique(codes):
        if code == _NONE:
            continue
        positions = np.flatnonzero(codes == code)
        if code == _OTHER:
            for position in positions:
                problems.add_rows([position], f"{name}: a value of type {type(column[position]).__name__} "
                                              "has no Common Bill Format text form")
            bad_all[positions] = True
            continue
        group = [column[i] for i in positions]
        group_text, kind, bad = _render_group(name, code, group, problems, positions, has_none=False)
        if bad is not None:
            bad_all[positions] |= bad
        kinds.add(kind)
        mask = np.zeros(len(column), bool)
        mask[positions] = True
        text = pc.replace_with_mask(text, pa.array(mask), group_text)
    kind = kinds.pop() if len(kinds) == 1 and not (codes == _STR).any() else None
    return text, kind, bad_all if bad_all.any() else None


def _render_group(name, code, values, problems, positions, has_none=True):
    """Values of one kind (and None, if `has_none`) as text: (array, kind, mask of bad values
    or None). `positions` maps the group's values back to rows, for reasons."""
    if code == _STR:
        return pa.array(values, _STRING), None, None
    if code == _INT:
        try:
            return pa.array(values, pa.int64()).cast(_STRING), typed_text.NUMBER, None
        except OverflowError:  # wider than 64 bits: Python writes it exactly
            return pa.array([None if v is None else str(int(v)) for v in values], _STRING), typed_text.NUMBER, None
    if code == _FLOAT:
        floats = pa.array(values, pa.float64())
        finite = pc.is_finite(floats)
        bad = ~_mask(finite) & _mask(pc.is_valid(floats))
        if bad.any():
            for index in np.flatnonzero(bad):
                problems.add_rows([positions[index]], f"{name}: {values[index]!r} is not a finite number")
            floats = pc.if_else(finite, floats, pa.scalar(None, pa.float64()))
        text, kind = typed_text.text_and_kind(floats)
        return text, kind, bad if bad.any() else None
    if code == _DECIMAL:
        present = [v for v in values if v is not None] if has_none else values
        text = pa.array(list(map(format, present, itertools.repeat("f"))), _STRING)
        if len(present) != len(values):
            text = pc.replace_with_mask(pa.nulls(len(values), _STRING),
                                        pa.array([v is not None for v in values]), text)
        # NaN, sNaN and Infinity are the only spellings with letters.
        bad = _mask(pc.match_substring_regex(text, "[A-Za-z]"))
        if bad.any():
            for index in np.flatnonzero(bad):
                problems.add_rows([positions[index]], f"{name}: Decimal({str(values[index])!r}) is not a finite number")
            text = pc.if_else(pa.array(bad), pa.scalar(None, _STRING), text)
        return text, _decimal_kind(text), bad if bad.any() else None
    if code == _DATETIME:
        # Arrow converts aware values to UTC and takes naive ones as UTC, in one call.
        return typed_text.text_and_kind(pa.array(values, pa.timestamp("us", tz="UTC"))) + (None,)
    if code == _DATE:
        return typed_text.text_and_kind(pa.array(values, pa.date32())) + (None,)
    raise AssertionError(code)


def _decimal_kind(text):
    """NUMBER when every value is already plain, so normalise need not check the column again.

    `format(Decimal, "f")` never writes an exponent or a leading zero; it is not plain only
    for a negative zero (`-0.00`, sent as `0`) or more digits than CBF allows."""
    if len(text) == text.null_count:
        return None
    if pc.max(pc.utf8_length(text)).as_py() > MAX_NUMBER_CHARS:
        return None
    negative_zero = pc.match_substring_regex(pc.filter(text, pc.starts_with(text, "-0")), r"^-0(\.0*)?$")
    return None if pc.any(negative_zero).as_py() else typed_text.NUMBER


def normalise_rows(rows, settings: RowSettings) -> normalise.NormalisedBatch:
    """Dict rows all the way to chunks: text (here), then `normalise.normalise_batch`.

    The chunks carry no source position (`order` None), so `anycost.bodies.packing` sorts their
    rows canonically: the same rows give the same bodies in any order or bundling."""
    if settings.input_format == sources.FOCUS:
        return _normalise_focus(rows_to_text(rows, cbf_columns_only=False), settings)
    return normalise_text(rows_to_text(rows, _extra(settings)), settings)


def normalise_record_batch(batch, settings: RowSettings) -> normalise.NormalisedBatch:
    """A typed record batch all the way to chunks, as `normalise_rows`."""
    if settings.input_format == sources.FOCUS:
        return _normalise_focus(TextRows(batch, []), settings)
    return normalise_text(record_batch_to_text(batch, _extra(settings)), settings)


def _normalise_focus(focus_rows: TextRows, settings):
    """FOCUS rows: mapped to CBF columns as the file path maps them (`anycost.inputs.sources`), rows
    refused by its rules (another currency, say) rejected with their FOCUS values."""
    batch = focus_rows.batch
    prepared = sources.prepare(batch, settings)
    rejects = list(focus_rows.rejects)
    if prepared.refused.any():
        positions = np.flatnonzero(prepared.refused)
        for position, original in zip(positions, batch.take(pa.array(positions)).to_pylist()):
            rejects.append(reject(str(prepared.reasons[position]),
                                  {k: v if isinstance(v, str) else repr(v) for k, v in original.items()
                                   if v is not None and v != ""}))
        prepared.batch = prepared.batch.filter(pa.array(~prepared.refused))
    text = record_batch_to_text(prepared.batch, _extra(settings))
    result = normalise_text(TextRows(text.batch, rejects + text.rejects), settings)
    result.rows_in = batch.num_rows + len(focus_rows.rejects)
    return result


def normalise_text(text: TextRows, settings: RowSettings) -> normalise.NormalisedBatch:
    n = text.batch.num_rows
    source = normalise.SourceBatch("", None, np.zeros(n, np.int64))
    result = normalise.normalise_batch(text.batch, source, settings)
    rejects = text.rejects + [reject(r["reason"], r["values"]) for r in result.rejects]
    return normalise.NormalisedBatch(result.chunks, rejects, result.rows_in + len(text.rejects))


def _extra(settings):
    return (settings.stream_column,) if settings.stream_column else ()
