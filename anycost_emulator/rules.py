"""The rules of AnyCost Stream the emulator enforces: the CBF columns, values and body shape.

Pure functions over parsed JSON, shared by the create and validate endpoints. This is the
emulator's own reading of docs/anycost-api.md in its strictest form, written apart from the
connector's `anycost` package so that one cannot hide the other's mistakes.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta
from typing import Any, Iterator, Optional

# Read at call time, so tests can monkeypatch it.
MAX_REPORTED_ERRORS = 100

OPERATIONS = frozenset({"sum", "replace_drop", "replace_hourly"})
DEFAULT_OPERATION = "replace_drop"
BODY_FIELDS = frozenset({"month", "operation", "data"})
REQUIRED_COLUMNS = ("time/usage_start", "cost/cost")
NUMERIC_COLUMNS = frozenset({
    "cost/cost", "cost/discounted_cost", "cost/amortized_cost",
    "cost/discounted_amortized_cost", "cost/on_demand_cost", "usage/amount",
})
TIMESTAMP_COLUMNS = frozenset({"time/usage_start", "time/usage_end"})
CBF_COLUMNS = NUMERIC_COLUMNS | TIMESTAMP_COLUMNS | frozenset({
    "lineitem/id", "lineitem/type", "lineitem/description", "lineitem/cloud_provider",
    "resource/id", "resource/service", "resource/account", "resource/region",
    "resource/usage_family", "action/operation", "action/usage_type", "action/region",
    "action/account", "usage/units", "bill/invoice_id",
    "k8s/cluster", "k8s/namespace", "k8s/deployment", "k8s/labels",
})
TAG_PREFIX = "resource/tag:"
LINEITEM_TYPES = frozenset({
    "Usage", "Tax", "Support", "Purchase", "CommittedUsePurchase", "Discount", "Credit", "Fee",
    "Adjustment", "CommittedUseVacancy", "CommittedUseRecurringFee",
})

# fullmatch + explicit [0-9] everywhere: `\d` would accept non-ASCII digits and `$` a trailing \n.
CONNECTION_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
MONTH_RE = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")
_NUMBER_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?")
_TAG_KEY_RE = re.compile(r"[A-Za-z0-9_.:/=+\-@]+")
_TIMESTAMP_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?"
    r"(?:Z|([+-])([0-9]{2}):([0-9]{2}))"
)


@functools.lru_cache(maxsize=1 << 16)
def parse_timestamp(value: str) -> Optional[tuple[str, str]]:
    """Return (UTC month "YYYY-MM", UTC hour "YYYY-MM-DDTHH") or None when not a valid timestamp.

    Cached: a body usually repeats the same few hours thousands of times.
    """
    m = _TIMESTAMP_RE.fullmatch(value)
    if m is None:
        return None
    y, mo, d, hh, mi, ss, sign, oh, om = m.groups()
    try:
        moment = datetime(int(y), int(mo), int(d), int(hh), int(mi), int(ss))
        if sign is not None:
            if int(oh) > 23 or int(om) > 59:
                return None
            offset = timedelta(hours=int(oh), minutes=int(om))
            moment = moment - offset if sign == "+" else moment + offset
    except (ValueError, OverflowError):
        return None
    hour = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T{moment.hour:02d}"
    return hour[:7], hour


def utc_hour(value: str) -> Optional[str]:
    """UTC hour key of a timestamp; the common "...Z" form needs no parsing."""
    if value.endswith("Z") and len(value) >= 20:
        return value[:13]
    parsed = parse_timestamp(value)
    return parsed[1] if parsed else None


def parse_month(value: Any) -> Optional[str]:
    """The body's month: "YYYY-MM", or a valid ISO timestamp whose first 7 characters give it."""
    if not isinstance(value, str):
        return None
    if MONTH_RE.fullmatch(value):
        return value
    if parse_timestamp(value) is not None and MONTH_RE.fullmatch(value[:7]):
        return value[:7]
    return None


def show(value: str, limit: int = 60) -> str:
    """A value for an error message, quoted and truncated."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _is_known_column(column: str) -> bool:
    if column in CBF_COLUMNS:
        return True
    return column.startswith(TAG_PREFIX) and bool(_TAG_KEY_RE.fullmatch(column[len(TAG_PREFIX):]))


def _value_error(column: str, value: str) -> Optional[str]:
    """What is wrong with one non-empty string value of a known column, if anything."""
    if column in NUMERIC_COLUMNS:
        if not _NUMBER_RE.fullmatch(value):
            return f"invalid decimal number {show(value)} (digits with optional '-' and fraction; no exponent)"
    elif column in TIMESTAMP_COLUMNS:
        if parse_timestamp(value) is None:
            return f"invalid timestamp {show(value)} (expected YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM))"
    elif column == "lineitem/type" and value not in LINEITEM_TYPES:
        return f"unknown lineitem/type {show(value)}"
    return None


def _cell_problem(column: str, value: Any) -> Optional[str]:
    if not _is_known_column(column):
        return "unknown column"
    if not isinstance(value, str):
        return f"value must be a string, not {type(value).__name__}"
    return _value_error(column, value) if value else None


def _cell_errors(index: int, row: dict) -> Iterator[str]:
    for column, value in row.items():
        problem = _cell_problem(column, value)
        if problem:
            yield f"data[{index}][{column!r}]: {problem}"


def _row_rule_errors(index: int, row: dict, month: Optional[str]) -> Iterator[str]:
    for column in REQUIRED_COLUMNS:
        if column not in row:
            yield f"data[{index}][{column!r}]: missing required column"
        elif row[column] == "":
            yield f"data[{index}][{column!r}]: required value is empty"
    has_tag_value = any(
        column.startswith(TAG_PREFIX) and isinstance(value, str) and value
        for column, value in row.items()
    )
    if has_tag_value and not row.get("resource/id"):
        yield f"data[{index}]['resource/id']: required when a resource/tag column has a value"
    start = row.get("time/usage_start")
    parsed = parse_timestamp(start) if isinstance(start, str) and start else None
    if parsed and month and parsed[0] != month:
        yield (f"data[{index}]['time/usage_start']: {show(start)} is in {parsed[0]} (UTC), "
               f"not in the body's month {month}")


def row_errors(index: int, row: Any, month: Optional[str]) -> list[str]:
    """All problems of one CBF row (month None: skip the month check)."""
    if not isinstance(row, dict):
        return [f"data[{index}]: row must be a JSON object, not {type(row).__name__}"]
    return list(_cell_errors(index, row)) + list(_row_rule_errors(index, row, month))


def envelope_errors(obj: Any) -> list[str]:
    """Problems with the body outside the rows: month, operation, data, unknown fields."""
    if not isinstance(obj, dict):
        return ["body must be a JSON object"]
    errors = [f"unknown top-level field {name!r}" for name in obj if name not in BODY_FIELDS]
    if "month" not in obj:
        errors.append("month: missing (expected YYYY-MM)")
    elif parse_month(obj["month"]) is None:
        errors.append(f"month: invalid value {obj['month']!r} (expected YYYY-MM)")
    if obj.get("operation", DEFAULT_OPERATION) not in OPERATIONS:
        errors.append(f"operation: must be one of {sorted(OPERATIONS)}, got {obj['operation']!r}")
    if not isinstance(obj.get("data"), list):
        errors.append("data: missing or not a list of row objects")
    return errors


def validate_body(obj: Any) -> list[str]:
    """Every problem with a create/validate body, as messages naming row index and column.

    Returns [] for a valid body. Stops after MAX_REPORTED_ERRORS messages.
    """
    errors = envelope_errors(obj)
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        return errors
    month = parse_month(obj.get("month"))
    for index, row in enumerate(obj["data"]):
        errors.extend(row_errors(index, row, month))
        if len(errors) >= MAX_REPORTED_ERRORS:
            return errors[:MAX_REPORTED_ERRORS] + [
                f"too many errors: stopped after {MAX_REPORTED_ERRORS}"]
    return errors


def error_summary(errors: list[str], shown: int = 5) -> str:
    text = "; ".join(errors[:shown])
    if len(errors) > shown:
        text += f" (and {len(errors) - shown} more)"
    return text


def valid_connection_id(value: Optional[str]) -> bool:
    return value is not None and CONNECTION_RE.fullmatch(value) is not None


def valid_number(value: str) -> bool:
    """A CBF decimal: digits with optional '-' and fraction, no exponent."""
    return isinstance(value, str) and _NUMBER_RE.fullmatch(value) is not None


def valid_month(value: str) -> bool:
    """A month in a path: exactly YYYY-MM."""
    return MONTH_RE.fullmatch(value) is not None
