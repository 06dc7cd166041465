"""Typed Arrow columns (from Parquet) as exact CBF text.

CBF values are strings. A typed column becomes the text a person would have written:
decimals exactly, floats as their shortest round-trip decimal without an exponent,
integers as written, timestamps as UTC `YYYY-MM-DDTHH:MM:SS[.fff]Z`. Null stays null,
which means absent. No Beam, no HTTP.
"""
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from anycost.inputs import values

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


# What a typed column's text is known to be, recorded in the field's metadata so that
# validation can skip checks the type already guarantees (see anycost.inputs.normalise).
KIND_KEY = b"cbf_kind"
NUMBER, TIMESTAMP = b"number", b"timestamp"


def column_to_text(column):
    """One Arrow array of a supported type as an array of CBF strings."""
    return text_and_kind(column)[0]


def text_and_kind(column):
    """(CBF strings, kind): `kind` is NUMBER or TIMESTAMP when every value is a plain
    decimal or a valid UTC timestamp by construction, else None (text to be checked)."""
    arrow_type = column.type
    if isinstance(arrow_type, pa.DictionaryType):
        return text_and_kind(column.dictionary_decode())
    problem = type_problem(arrow_type)
    if problem:
        raise UnsupportedColumnType(problem)
    if pa.types.is_string(arrow_type):
        return column, None
    if pa.types.is_large_string(arrow_type):
        return column.cast(_STRING), None
    if pa.types.is_null(arrow_type):
        return pa.nulls(len(column), _STRING), None
    if pa.types.is_timestamp(arrow_type):
        return _timestamps_to_text(column), TIMESTAMP
    if pa.types.is_date(arrow_type):
        return pc.binary_join_element_wise(pc.strftime(column, format="%Y-%m-%d"), "T00:00:00Z", ""), TIMESTAMP
    if (pa.types.is_decimal(arrow_type) and arrow_type.precision <= 18 and arrow_type.scale >= 0
            and sys.byteorder == "little"):
        return _small_decimals_to_text(column), NUMBER
    text = pc.cast(column, _STRING)
    if pa.types.is_floating(arrow_type):
        # Arrow's text is already the shortest round trip for the column's own width
        # (float32 1e22 is `1e+22`, not float64's 9.999999778196308e+21), so only its
        # exponent needs rewriting; `nan` and `inf` stay as they are and validation rejects them.
        return _fix_slow(text, text, ("e", "n", "-0"), values.render_number)
    if pa.types.is_decimal(arrow_type):
        return _fix_slow(text, text, ("E",), values.render_number)
    return text, NUMBER


def _small_decimals_to_text(column):
    """Decimals of up to 18 digits as plain text from their scaled integers, all in kernels.

    Arrow's own cast writes small values with an exponent (`1.8E-7`), which would send a
    fifth of a typical cost column through the slow path. Every value keeps its `scale`
    fraction digits, as written in the file."""
    scale = column.type.scale
    words = np.frombuffer(column.buffers()[1], np.int64, 2 * len(column), column.offset * 16)
    scaled = words[0::2]  # little-endian low word: the whole value when precision <= 18
    magnitude = pc.cast(pa.array(np.abs(scaled)), _STRING)
    if scale:  # the point goes in `scale` digits from the end: one ASCII slice insert, no join
        magnitude = pc.binary_replace_slice(pc.utf8_lpad(magnitude, scale + 1, "0"), -scale, -scale, ".")
    negative = scaled < 0
    text = magnitude if not negative.any() else pc.if_else(
        pa.array(negative), pc.binary_replace_slice(magnitude, 0, 0, "-"), magnitude)
    return text if column.null_count == 0 else pc.if_else(pc.is_valid(column), text, pa.scalar(None, _STRING))


def _fix_slow(text, source, markers, render):
    """Re-render, one by one, the few values whose fast text is not plain (`1e+22`, `nan`).

    `markers` are substrings that flag such a value (`-0` only as the whole value); plain
    substring search is several times faster than a regular expression here. Returns
    (text, NUMBER) when every value came out plain, else (text, None)."""
    slow = None
    for marker in markers:
        found = pc.equal(text, marker) if marker == "-0" else pc.match_substring(text, marker)
        slow = found if slow is None else pc.or_(slow, found)
    slow = pc.fill_null(slow, False)
    positions = np.flatnonzero(slow.to_numpy(zero_copy_only=False))
    if not len(positions):
        return text, NUMBER
    rendered, all_plain = [], True
    for value in source.take(pa.array(positions)).to_pylist():
        try:
            rendered.append(render(value))
        except values.InvalidValue:
            rendered.append(str(value))  # left as "nan"/"inf": number validation rejects the row
            all_plain = False
    return pc.replace_with_mask(text, slow, pa.array(rendered, _STRING)), NUMBER if all_plain else None


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
