"""Typed Arrow columns (from Parquet) as exact CBF text.

CBF values are strings. A typed column becomes the text a person would have written:
decimals exactly, floats as their shortest round-trip decimal without an exponent,
integers as written, timestamps as UTC `YYYY-MM-DDTHH:MM:SS[.fff]Z`. Null stays null,
which means absent. No Beam, no HTTP.
"""
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import values

_STRING = pa.string()


class UnsupportedColumnType(Exception):
    """A column whose Arrow type has no CBF text form (bool, binary, list, struct...)."""


def type_problem(arrow_type):
    """Why a column of `arrow_type` cannot be read as CBF, or None when it can."""
    if isinstance(arrow_type, pa.DictionaryType):
        return type_problem(arrow_type.value_type)
    if (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
            or pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type)
            or pa.types.is_decimal(arrow_type) or pa.types.is_timestamp(arrow_type)
            or pa.types.is_date(arrow_type) or pa.types.is_null(arrow_type)):
        return None
    return f"has type {arrow_type}, which has no Common Bill Format text form"


def column_to_text(column):
    """One Arrow array of a supported type as an array of CBF strings."""
    arrow_type = column.type
    if isinstance(arrow_type, pa.DictionaryType):
        return column_to_text(column.dictionary_decode())
    problem = type_problem(arrow_type)
    if problem:
        raise UnsupportedColumnType(problem)
    if pa.types.is_string(arrow_type):
        return column
    if pa.types.is_null(arrow_type):
        return pa.nulls(len(column), _STRING)
    if pa.types.is_timestamp(arrow_type):
        return _timestamps_to_text(column)
    if pa.types.is_date(arrow_type):
        return pc.binary_join_element_wise(pc.strftime(column, format="%Y-%m-%d"), "T00:00:00Z", "")
    text = pc.cast(column, _STRING)
    if pa.types.is_floating(arrow_type):
        # Arrow's text is already the shortest round trip for the column's own width
        # (float32 1e22 is `1e+22`, not float64's 9.999999778196308e+21), so only its
        # exponent needs rewriting; `nan` and `inf` stay as they are and validation rejects them.
        return _fix_slow(text, text, ("e", "n", "-0"), values.render_number)
    if pa.types.is_decimal(arrow_type):
        return _fix_slow(text, text, ("E",), values.render_number)
    return text


def _fix_slow(text, source, markers, render):
    """Re-render, one by one, the few values whose fast text is not plain (`1e+22`, `nan`).

    `markers` are substrings that flag such a value (`-0` only as the whole value); plain
    substring search is several times faster than a regular expression here."""
    slow = None
    for marker in markers:
        found = pc.equal(text, marker) if marker == "-0" else pc.match_substring(text, marker)
        slow = found if slow is None else pc.or_(slow, found)
    slow = pc.fill_null(slow, False)
    positions = np.flatnonzero(slow.to_numpy(zero_copy_only=False))
    if not len(positions):
        return text
    rendered = []
    for value in source.take(pa.array(positions)).to_pylist():
        try:
            rendered.append(render(value))
        except values.InvalidValue:
            rendered.append(str(value))  # left as "nan"/"inf": number validation rejects the row
    return pc.replace_with_mask(text, slow, pa.array(rendered, _STRING))


def _timestamps_to_text(column):
    """UTC `YYYY-MM-DDTHH:MM:SS`, with the fraction only when it is not zero, then `Z`.

    Billing rows share few distinct times (a month has 744 hours), so each distinct value
    is formatted once and the text is gathered back by index."""
    unit = column.type.unit
    if column.type.tz is not None:
        column = column.cast(pa.timestamp(unit, tz="UTC"))
    encoded = column.dictionary_encode()
    text = pc.strftime(encoded.dictionary, format="%Y-%m-%dT%H:%M:%S")
    if unit != "s":
        text = pc.replace_substring_regex(text, r"\.?0+$", "")
    return pc.binary_join_element_wise(text, "Z", "").take(encoded.indices)
