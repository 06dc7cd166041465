"""Exact rendering of single CBF values: numbers and timestamps.

These are the slow, careful paths. The columnar code renders the common spellings with
Arrow kernels and sends only the unusual ones (exponents, offsets, fractions) through here.
Money never passes through a binary float: numbers are `Decimal` from text to text.
"""
import datetime as dt
import decimal
import re
from decimal import Decimal

# Already in the form we send: no sign on zero, no leading zeros, no exponent. A negative
# zero (`-0`, `-0.00`) is not plain: it is sent as `0`. Wrapped in a group so that it can be
# anchored as `^...$` by the Arrow (RE2) fast path in `anycost.inputs.normalise`.
PLAIN_NUMBER = re.compile(r"(?:-?[1-9][0-9]*(?:\.[0-9]+)?|-?0\.[0-9]*[1-9][0-9]*|0(?:\.[0-9]+)?)")
_ANY_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
# The widest number we agree to send: a cost with more digits than this is a broken export.
MAX_NUMBER_CHARS = 64

# ASCII digits only: `\d` would also take Arabic-Indic or full-width digits.
# The time may be left out: a date alone is midnight UTC, as a Parquet date32 is.
_TIMESTAMP = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[T ]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?)?")


class InvalidValue(ValueError):
    """A value that cannot become CBF text; the message says why, for a person."""


def _show(text, limit=60):
    """A value for a message: quoted, and cut short so a 10 MB field does not become a reason."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def render_number(text):
    """Any decimal spelling (`1.5E+2`, `+.5`, ` 12 `) as a plain decimal string of the same value."""
    stripped = text.strip()
    if PLAIN_NUMBER.fullmatch(stripped) and len(stripped) <= MAX_NUMBER_CHARS:
        return stripped
    if not _ANY_DECIMAL.fullmatch(stripped):
        raise InvalidValue(f"{_show(text)} is not a decimal number")
    try:
        value = Decimal(stripped)  # exact, whatever the context's precision
    except decimal.InvalidOperation:  # an exponent beyond what Decimal can hold
        raise InvalidValue(f"{_show(text)} is out of range") from None
    if value.is_zero():
        return "0"
    if abs(value.adjusted()) > MAX_NUMBER_CHARS:
        raise InvalidValue(f"{_show(text)} is out of range")
    rendered = format(value, "f")
    if rendered.startswith("+"):
        rendered = rendered[1:]
    if len(rendered) > MAX_NUMBER_CHARS:
        raise InvalidValue(f"{_show(text)} has more than {MAX_NUMBER_CHARS} digits")
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
    """ISO 8601 (`T` or space, `Z`, `±HH:MM` or naive = UTC, any fraction; or a date alone,
    midnight UTC) as UTC with `Z`.

    The fraction is carried as text: offsets are whole minutes, so shifting to UTC never
    touches it, and nanosecond digits survive.
    """
    match = _TIMESTAMP.fullmatch(text.strip())
    if not match:
        raise InvalidValue(f"{_show(text)} is not an ISO 8601 timestamp (YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM])")
    year, month, day, hour, minute, second = (int(g or 0) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction, zone = match.group(7) or "", match.group(8) or "Z"
    try:
        when = dt.datetime(year, month, day, hour, minute, second)
        if zone != "Z":
            sign = 1 if zone[0] == "+" else -1
            if int(zone[1:3]) > 23 or int(zone[4:6]) > 59:
                raise ValueError(f"offset {zone} out of range")
            offset = dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
            when -= sign * offset
    except (ValueError, OverflowError) as err:
        raise InvalidValue(f"{_show(text)} is not a valid date and time ({err})") from None
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
