"""Exact rendering of single CBF values: numbers and timestamps.

These are the slow, careful paths. The columnar code renders the common spellings with
Arrow kernels and sends only the unusual ones (exponents, offsets, fractions) through here.
Money never passes through a binary float: numbers are `Decimal` from text to text.
"""
import datetime as dt
import decimal
import re
from decimal import Decimal

PLAIN_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
_ANY_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
# The widest number we agree to send: a cost with more digits than this is a broken export.
MAX_NUMBER_CHARS = 64

_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})?")


class InvalidValue(ValueError):
    """A value that cannot become CBF text; the message says why, for a person."""


def render_number(text):
    """Any decimal spelling (`1.5E+2`, `+.5`, ` 12 `) as a plain decimal string of the same value."""
    stripped = text.strip()
    if PLAIN_NUMBER.fullmatch(stripped):
        return stripped
    if not _ANY_DECIMAL.fullmatch(stripped):
        raise InvalidValue(f"{text!r} is not a decimal number")
    value = Decimal(stripped)
    if abs(value.adjusted()) > MAX_NUMBER_CHARS:
        raise InvalidValue(f"{text!r} is out of range")
    rendered = format(value, "f")
    if rendered.startswith("+"):
        rendered = rendered[1:]
    if len(rendered) > MAX_NUMBER_CHARS:
        raise InvalidValue(f"{text!r} has more than {MAX_NUMBER_CHARS} digits")
    return rendered


def render_float(value):
    """A binary float as its shortest round-trip decimal, never in exponent notation."""
    if value != value or value in (float("inf"), float("-inf")):
        raise InvalidValue(f"{value!r} is not a finite number")
    rendered = format(Decimal(repr(value)), "f")
    if "." in rendered:
        rendered = rendered.rstrip("0").rstrip(".")
    return "0" if rendered in ("-0", "") else rendered


def render_timestamp(text):
    """ISO 8601 (`T` or space, `Z`, `±HH:MM` or naive = UTC, any fraction) as UTC with `Z`.

    The fraction is carried as text: offsets are whole minutes, so shifting to UTC never
    touches it, and nanosecond digits survive.
    """
    match = _TIMESTAMP.fullmatch(text.strip())
    if not match:
        raise InvalidValue(f"{text!r} is not an ISO 8601 timestamp (YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM])")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction, zone = match.group(7) or "", match.group(8) or "Z"
    try:
        when = dt.datetime(year, month, day, hour, minute, second)
        if zone != "Z":
            sign = 1 if zone[0] == "+" else -1
            offset = dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
            if offset >= dt.timedelta(hours=24):
                raise ValueError("offset out of range")
            when -= sign * offset
    except (ValueError, OverflowError) as err:
        raise InvalidValue(f"{text!r} is not a valid date and time ({err})") from None
    return when.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def exact_sum(values):
    """Sum decimal strings or Decimals with no rounding at all (raises if it would round)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 400
        ctx.traps[decimal.Inexact] = True
        ctx.traps[decimal.Rounded] = True
        total = Decimal(0)
        for value in values:
            total += Decimal(value)
        return total


def decimal_text(value):
    """A Decimal as plain text (`150`, `-0.5`), the way totals appear in reports."""
    return format(value, "f")
