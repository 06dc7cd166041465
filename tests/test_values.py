"""anycost.inputs.values: exact rendering of numbers and timestamps, and exact sums."""
import datetime as dt
import decimal
import re
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from anycost.inputs import values
from anycost.inputs.values import InvalidValue, exact_sum, render_float, render_number, render_timestamp

PLAIN = re.compile(r"-?[0-9]+(\.[0-9]+)?")  # what the API accepts (and the emulator checks)


# ----- render_number -------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("12", "12"),
    ("-12.5", "-12.5"),
    ("0.0000125", "0.0000125"),
    ("1.50", "1.50"),                 # plain text is kept as written: same value
    ("1.5E+2", "150"),
    ("1.5e2", "150"),
    ("1E+2", "100"),
    ("1.25e-05", "0.0000125"),
    ("-1.25E-5", "-0.0000125"),
    ("+.5", "0.5"),
    ("-.5", "-0.5"),
    (".5", "0.5"),
    ("5.", "5"),
    ("+12", "12"),
    (" 12 ", "12"),
    ("\t-3.5\n", "-3.5"),
    ("007", "7"),
    ("-00.50", "-0.50"),
    ("0", "0"),
    ("-0", "0"),
    ("-0.00", "0"),
    ("+0", "0"),
    ("0e5", "0"),
    ("0E-100", "0"),
    ("1e-60", "0." + "0" * 59 + "1"),
])
def test_render_number_spellings(text, expected):
    assert render_number(text) == expected


@pytest.mark.parametrize("text", [
    "", " ", "NaN", "nan", "-nan", "inf", "Infinity", "-Infinity", "1_000", "1,000", "abc", "12abc",
    "0x10", "1e", "e5", ".", "+", "-", "--1", "1.2.3", "1e5.5", "١٢", "１２", "12 34",
    "1e999999999999999999999",         # past what Decimal can hold: no InvalidOperation escapes
    "1e-99999999999999999999999",
    "1e65", "1e-65", "1" * 65, "0." + "0" * 63 + "1",
])
def test_render_number_rejects(text):
    with pytest.raises(InvalidValue):
        render_number(text)


def test_render_number_message_is_short_for_huge_text():
    with pytest.raises(InvalidValue) as err:
        render_number("x" * 1_000_000)
    assert len(str(err.value)) < 200


@settings(max_examples=200, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False, places=None,
                   min_value=Decimal("-1e30"), max_value=Decimal("1e30")),
       st.sampled_from(["{}", "{:e}", "{:E}", " {} ", "{:f}"]))
def test_render_number_keeps_the_value_and_is_plain(value, spelling):
    text = spelling.format(value)
    try:
        rendered = render_number(text)
    except InvalidValue:
        assert len(format(value, "f").lstrip("-")) > values.MAX_NUMBER_CHARS - 1
        return
    assert PLAIN.fullmatch(rendered), rendered
    assert Decimal(rendered) == value
    assert not rendered.startswith("-0") or Decimal(rendered) != 0  # no negative zero
    assert render_number(rendered) == rendered  # idempotent


# ----- render_float --------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    (1e22, "10000000000000000000000"),
    (1.25e-05, "0.0000125"),
    (0.1, "0.1"),
    (-0.0, "0"),
    (0.0, "0"),
    (100.0, "100"),
    (-2.5, "-2.5"),
    (1e16, "10000000000000000"),
    (1.5e16, "15000000000000000"),
    (123456789.123, "123456789.123"),
])
def test_render_float(value, expected):
    assert render_float(value) == expected


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_render_float_rejects_non_finite(value):
    with pytest.raises(InvalidValue):
        render_float(value)


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_render_float_is_shortest_round_trip_without_exponent(value):
    rendered = render_float(value)
    assert PLAIN.fullmatch(rendered), rendered
    assert float(rendered) == value
    # shortest: the same significant digits as Python's repr (itself the shortest round trip)
    assert Decimal(rendered) == Decimal(repr(value))


# ----- render_timestamp ----------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("2024-08-16T13:00:00Z", "2024-08-16T13:00:00Z"),
    ("2024-08-16 13:00:00Z", "2024-08-16T13:00:00Z"),
    ("2024-08-16T13:00:00", "2024-08-16T13:00:00Z"),        # naive means UTC
    ("2024-08-16 13:00:00", "2024-08-16T13:00:00Z"),
    ("2024-08-16T13:00:00+00:00", "2024-08-16T13:00:00Z"),
    ("2024-08-16T13:00:00-00:00", "2024-08-16T13:00:00Z"),
    ("2024-08-16T13:00:00+02:00", "2024-08-16T11:00:00Z"),
    ("2024-08-16T13:00:00+05:30", "2024-08-16T07:30:00Z"),
    ("2024-08-31T23:30:00-01:00", "2024-09-01T00:30:00Z"),  # UTC month is September
    ("2024-01-01T00:30:00+01:00", "2023-12-31T23:30:00Z"),  # and back over a year
    ("2024-02-28T23:00:00-01:00", "2024-02-29T00:00:00Z"),  # leap day
    ("2024-08-16T13:00:00.5Z", "2024-08-16T13:00:00.5Z"),
    ("2024-08-16T13:00:00.500Z", "2024-08-16T13:00:00.500Z"),  # fraction kept as text
    ("2024-08-16T13:00:00.123456789Z", "2024-08-16T13:00:00.123456789Z"),  # nanoseconds survive
    ("2024-08-16T13:00:00.123456789-01:00", "2024-08-16T14:00:00.123456789Z"),
    (" 2024-08-16T13:00:00Z ", "2024-08-16T13:00:00Z"),
    ("2024-08-16", "2024-08-16T00:00:00Z"),                  # a date alone: midnight UTC
])
def test_render_timestamp(text, expected):
    assert render_timestamp(text) == expected


@pytest.mark.parametrize("text", [
    "", "2024-02-30", "2024-08-16Z", "2024-08-16T", "2024-08-16T13:00Z", "2024-08-16T13:00:00+0200", "2024-08-16T13:00:00 Z",
    "2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z", "2024-00-10T00:00:00Z",
    "2024-08-16T24:00:00Z", "2024-08-16T13:60:00Z", "2024-08-16T13:00:60Z", "0000-01-01T00:00:00Z",
    "2024-08-16T13:00:00+24:00", "2024-08-16T13:00:00+05:99", "2024-08-16T13:00:00.Z",
    "2024-8-16T13:00:00Z", "20240816T130000Z", "yesterday", "2024-08-16T13:00:00ZZ",
    "２０２４-08-16T13:00:00Z",         # full-width digits
    "2024-08-16T13:00:00.١Z",          # Arabic-Indic digit in the fraction
    "9999-12-31T23:30:00-01:00",       # past year 9999 once in UTC
    "0001-01-01T00:30:00+01:00",       # before year 1 once in UTC
])
def test_render_timestamp_rejects(text):
    with pytest.raises(InvalidValue):
        render_timestamp(text)


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=dt.datetime(1900, 1, 2), max_value=dt.datetime(2200, 12, 30)),
       st.integers(-23 * 60 - 59, 23 * 60 + 59), st.sampled_from(["T", " "]),
       st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,9}", fullmatch=True)))
def test_render_timestamp_matches_datetime(when, offset_minutes, sep, fraction):
    when = when.replace(microsecond=0)
    sign = "+" if offset_minutes >= 0 else "-"
    zone = f"{sign}{abs(offset_minutes) // 60:02d}:{abs(offset_minutes) % 60:02d}"
    text = when.strftime("%Y-%m-%d") + sep + when.strftime("%H:%M:%S") + fraction + zone
    expected = (when - dt.timedelta(minutes=offset_minutes)).strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"
    assert render_timestamp(text) == expected


# ----- exact_sum -----------------------------------------------------------------------------

def test_exact_sum_never_rounds():
    big = "1" + "0" * 60
    tiny = "0." + "0" * 59 + "1"
    total = exact_sum([big, tiny, "-" + big])
    assert total == Decimal(tiny)
    assert exact_sum(["0.1"] * 10) == Decimal("1")
    assert exact_sum([]) == 0
    assert exact_sum([Decimal("1.25"), "-0.25"]) == 1


def test_exact_sum_raises_rather_than_round():
    with pytest.raises((decimal.Inexact, decimal.Rounded)):
        exact_sum(["1e500", "1e-500"])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.decimals(allow_nan=False, allow_infinity=False, places=8,
                            min_value=-10**20, max_value=10**20)))
def test_exact_sum_equals_high_precision_sum(numbers):
    with decimal.localcontext() as ctx:
        ctx.prec = 200
        expected = sum(numbers, Decimal(0))
    assert exact_sum(str(n) for n in numbers) == expected


def test_decimal_text_is_plain():
    assert values.decimal_text(Decimal("1.5E+2")) == "150"
    assert values.decimal_text(Decimal("-0.5")) == "-0.5"
