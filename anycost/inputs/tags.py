"""Tags as `resource/tag:<key>` columns: read from JSON text, a map or a struct column,
and tag keys made acceptable to CloudZero.

Tags are read into one text column per original key over "units": the distinct Tags
texts of a JSON column (rows share few distinct tag sets, so each is parsed once), or
the rows themselves for a map or struct column. Keys are then checked or sanitised with
`anycost.cbf`'s rule, and keys that sanitise to the same key are merged by one
deterministic rule (`cbf.tag_key_priority`). Everything per row is an Arrow kernel or a
numpy gather. No Beam, no HTTP.
"""
import dataclasses
import json
from typing import Dict, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from anycost import cbf
from anycost.inputs import typed_text

_STRING = pa.string()

# Counter names (rows), as they appear in the run report's `input_rules`.
SANITISED = "rows_with_sanitised_tag_keys"
COLLISIONS = "rows_with_tag_key_collisions"
EMPTY_KEYS = "rows_with_empty_tag_keys_dropped"
UNREADABLE = "rows_with_unreadable_tags_dropped"


@dataclasses.dataclass
class UnitTags:
    """Tag values by original key over units, and how rows map onto units."""
    columns: Dict[str, pa.Array]  # original key -> text over units (null: no value)
    units: int
    codes: Optional[pa.Array] = None  # unit of each row; None when units are the rows
    unreadable: Optional[np.ndarray] = None  # per unit: a Tags value that is not a JSON object

    def row_weights(self):
        """How many rows each unit stands for."""
        if self.codes is None:
            return np.ones(self.units, np.int64)
        codes = pc.drop_null(self.codes).to_numpy(zero_copy_only=False)
        return np.bincount(codes, minlength=self.units)

    def to_rows(self, unit_column):
        return unit_column if self.codes is None else unit_column.take(self.codes)


def type_problem(arrow_type):
    """Why a Tags column of `arrow_type` cannot be read, or None."""
    if isinstance(arrow_type, pa.DictionaryType):
        arrow_type = arrow_type.value_type
    if (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_null(arrow_type)
            or pa.types.is_map(arrow_type) or pa.types.is_struct(arrow_type) or _is_key_value_list(arrow_type)):
        return None
    return (f"has type {arrow_type}; Tags must be JSON text, a map, a struct or a list of "
            "{key, value} structs")


def _is_key_value_list(arrow_type):
    if not (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)):
        return False
    item = arrow_type.value_type
    return pa.types.is_struct(item) and {f.name.lower() for f in item} >= {"key", "value"}


def read_tags(column) -> UnitTags:
    """A FOCUS `Tags` column of any supported type as tag values per original key."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column.type, pa.DictionaryType):
        column = column.dictionary_decode()
    arrow_type = column.type
    if pa.types.is_null(arrow_type):
        return UnitTags({}, len(column))
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return _from_json(column.cast(_STRING))
    if pa.types.is_map(arrow_type):
        return _from_entries_array(column, column.keys, column.items)
    if pa.types.is_struct(arrow_type):
        return _from_struct(column)
    if _is_key_value_list(arrow_type):
        names = {f.name.lower(): f.name for f in arrow_type.value_type}
        flat = column.values
        return _from_entries_array(column, flat.field(names["key"]), flat.field(names["value"]))
    raise ValueError(f"Tags {type_problem(arrow_type)}")


def _value_text(value):
    """A JSON tag value as text: strings as they are, numbers as written, booleans as
    `true`/`false`, objects and arrays as compact JSON; null means no value."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)  # numbers kept as their source text by parse_float/parse_int below


def _parse_object(text):
    """A JSON object, keeping numbers as written; Azure's older exports leave out the braces
    (`"env": "prod","team": "web"`), so a text that is not an object is tried inside braces."""
    for candidate in (text, "{" + text + "}"):
        try:
            parsed = json.loads(candidate, parse_float=str, parse_int=str)
        except ValueError:
            continue
        if isinstance(parsed, dict):
            return parsed
    return None


def _from_json(column):
    encoded = column.dictionary_encode()
    distinct = encoded.dictionary.to_pylist()
    unreadable = np.zeros(len(distinct), bool)
    units, keys, texts = [], [], []
    for unit, text in enumerate(distinct):
        if text is None or not text.strip():
            continue
        parsed = _parse_object(text)
        if not isinstance(parsed, dict):
            unreadable[unit] = True
            continue
        for key, value in parsed.items():
            units.append(unit)
            keys.append(key)
            texts.append(_value_text(value))
    columns = _columns_from_entries(len(distinct), np.array(units, np.int64),
                                    pa.array(keys, _STRING), pa.array(texts, _STRING))
    return UnitTags(columns, len(distinct), encoded.indices, unreadable)


def _as_text(values):
    if pa.types.is_string(values.type):
        return values
    try:
        return typed_text.column_to_text(values)
    except typed_text.UnsupportedColumnType:
        return pc.cast(values, _STRING)  # booleans: `true` / `false`


def _from_entries_array(column, keys, values):
    """A map or key/value list column: entries live in child arrays between offsets."""
    n = len(column)
    offsets = np.asarray(column.offsets)
    first, last = int(offsets[0]), int(offsets[-1])
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    keys, values = keys.slice(first, last - first), _as_text(values.slice(first, last - first))
    if column.null_count:
        valid = column.is_valid().to_numpy(zero_copy_only=False)[rows]
        rows, keys, values = rows[valid], keys.filter(pa.array(valid)), values.filter(pa.array(valid))
    return UnitTags(_columns_from_entries(n, rows, keys, values), n)


def _from_struct(column):
    columns = {}
    valid = column.is_valid()
    for index, field in enumerate(column.type):
        child = _as_text(column.field(index))
        columns[field.name] = child if not column.null_count else pc.if_else(valid, child, None)
    return UnitTags(columns, len(column))


def _columns_from_entries(units, unit_of_entry, keys, values):
    """{key: text over units} from (unit, key, value) entries; when a unit repeats a key,
    its last entry wins (a JSON object's rule)."""
    if not len(keys):
        return {}
    encoded = keys.dictionary_encode()
    names = encoded.dictionary.to_pylist()
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    columns = {}
    for code, name in enumerate(names):
        entries = order[bounds[code]:bounds[code + 1]]
        gather = np.full(units, -1, np.int64)
        gather[unit_of_entry[entries]] = entries
        columns[name] = values.take(pa.array(gather, mask=gather < 0))
    return columns


@dataclasses.dataclass
class MergedTags:
    """CBF tag columns by CBF column name, over the same units as the input."""
    columns: Dict[str, pa.Array]
    refused: Optional[np.ndarray]  # per unit: True when a key is refused (mode refuse)
    reasons: Optional[np.ndarray]  # per unit: why
    flags: Dict[str, np.ndarray]  # counter name -> per-unit mask


def merge_keys(columns, units, sanitize) -> MergedTags:
    """Check or sanitise each original key; merge keys that become the same key.

    Merge rule: the value of the key first in `cbf.tag_key_priority` order (a key that was
    already valid, then code point order) among the keys with a non-empty value."""
    columns = {key: _blank_to_null(column) for key, column in columns.items()}
    has_value = {key: column_mask(pc.is_valid(column)) for key, column in columns.items()}
    flags = {name: np.zeros(units, bool) for name in (SANITISED, COLLISIONS, EMPTY_KEYS)}
    refused = reasons = None
    groups = {}
    for key in sorted(columns, key=cbf.tag_key_priority):
        target = cbf.sanitize_tag_key(key) if sanitize else key
        if target == key and cbf.TAG_KEY_PATTERN.fullmatch(key):
            groups.setdefault(target, []).append(key)
        elif not sanitize:
            refused = np.zeros(units, bool) if refused is None else refused
            reasons = np.empty(units, object) if reasons is None else reasons
            new = has_value[key] & ~refused
            refused |= has_value[key]
            reasons[new] = (f"tag key {key!r} has characters CloudZero does not allow (letters, digits and "
                            "_ . : / = + - @ only); --tag_keys sanitize replaces each with '_'")
        elif not target:
            flags[EMPTY_KEYS] |= has_value[key]
        else:
            flags[SANITISED] |= has_value[key]
            groups.setdefault(target, []).append(key)
    merged = {}
    for target, keys in groups.items():
        if len(keys) == 1:
            merged[cbf.TAG_PREFIX + target] = columns[keys[0]]
            continue
        flags[COLLISIONS] |= np.sum([has_value[k] for k in keys], axis=0) > 1
        merged[cbf.TAG_PREFIX + target] = pc.coalesce(*[columns[k] for k in keys])
    return MergedTags(merged, refused, reasons, flags)


def column_mask(boolean_array):
    return pc.fill_null(boolean_array, False).to_numpy(zero_copy_only=False)


def _blank_to_null(column):
    if column.null_count == len(column):
        return column
    return pc.if_else(pc.equal(column, ""), pa.scalar(None, _STRING), column)
