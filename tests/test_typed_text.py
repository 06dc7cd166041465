"""anycost.inputs.typed_text: typed Arrow columns (Parquet) as exact CBF text."""
import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from anycost.inputs import values
from anycost.inputs.typed_text import UnsupportedColumnType, column_to_text, type_problem


def text(array):
    out = column_to_text(array)
    assert out.type == pa.string()
    return out.to_pylist()


def test_decimal128_exact():
    array = pa.array([Decimal("123.45"), None, Decimal("-0.01"), Decimal("99999999.99")], pa.decimal128(10, 2))
    assert text(array) == ["123.45", None, "-0.01", "99999999.99"]


def test_decimal128_wide_is_exact():
    value = Decimal("12345678901234567890.123456789012345678")
    assert text(pa.array([value], pa.decimal128(38, 18))) == ["12345678901234567890.123456789012345678"]


def test_decimal256_exact():
    value = Decimal("1234567890123456789012345678901234567890.0123456789")
    assert text(pa.array([value, None], pa.decimal256(60, 10))) == [str(value), None]


def test_decimal_negative_scale_has_no_exponent():
    assert text(pa.array([Decimal("12300"), Decimal("-500")], pa.decimal128(5, -2))) == ["12300", "-500"]
    assert text(pa.array([Decimal("1E+40")], pa.decimal256(60, -10))) == ["1" + "0" * 40]


@pytest.mark.parametrize("value, expected", [
    (1.25e-05, "0.0000125"),
    (1e22, "10000000000000000000000"),
    (0.1, "0.1"),
    (-2.5, "-2.5"),
    (100.0, "100"),
    (1.5e16, "15000000000000000"),
    (-0.0, "0"),
    (123456789.123, "123456789.123"),
])
def test_float64(value, expected):
    assert text(pa.array([value], pa.float64())) == [expected]


def test_float32_is_shortest_for_its_own_width():
    # float32(1e22) is 9999999778196308361216: its shortest float32 spelling is 1e22.
    assert text(pa.array([0.1, 1e22, 1e-5, 3.4e38], pa.float32())) == [
        "0.1", "10000000000000000000000", "0.00001", "340000000000000000000000000000000000000"]


def test_float_too_small_for_64_digits_is_left_for_validation_to_reject():
    # 5e-324 needs 325 digits without an exponent, past values.MAX_NUMBER_CHARS.
    out = text(pa.array([5e-324, 1e-30], pa.float64()))
    assert out[1] == "0." + "0" * 29 + "1"
    with pytest.raises(values.InvalidValue):
        values.render_number(out[0])


def test_float_nan_and_inf_stay_so_validation_rejects_them():
    out = text(pa.array([float("nan"), float("inf"), float("-inf"), None, 1.5], pa.float64()))
    assert out[0].lower() == "nan" and out[1].lower() == "inf" and out[2].lower() == "-inf"
    assert out[3:] == [None, "1.5"]


FLOATS = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e40, max_value=1e40).filter(
    lambda f: f == 0 or abs(f) >= 1e-30)


@settings(max_examples=200, deadline=None)
@given(st.lists(FLOATS, min_size=1, max_size=20))
def test_float64_round_trips_without_exponent(floats):
    for value, rendered in zip(floats, text(pa.array(floats, pa.float64()))):
        assert "e" not in rendered.lower()
        assert float(rendered) == value
        assert Decimal(rendered) == Decimal(repr(value))


@pytest.mark.parametrize("arrow_type", [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(),
                                        pa.uint32(), pa.uint64()])
def test_integers_as_written(arrow_type):
    low = 0 if pa.types.is_unsigned_integer(arrow_type) else -5
    assert text(pa.array([low, 7, None], arrow_type)) == [str(low), "7", None]


def test_int64_extremes():
    assert text(pa.array([2**63 - 1, -2**63], pa.int64())) == ["9223372036854775807", "-9223372036854775808"]
    assert text(pa.array([2**64 - 1], pa.uint64())) == ["18446744073709551615"]


@pytest.mark.parametrize("unit, raw, expected", [
    ("s", 1723813200, "2024-08-16T13:00:00Z"),
    ("ms", 1723813200000, "2024-08-16T13:00:00Z"),
    ("ms", 1723813200500, "2024-08-16T13:00:00.5Z"),
    ("ms", 1723813200001, "2024-08-16T13:00:00.001Z"),
    ("us", 1723813200000000, "2024-08-16T13:00:00Z"),
    ("us", 1723813200123456, "2024-08-16T13:00:00.123456Z"),
    ("us", 1723813200100000, "2024-08-16T13:00:00.1Z"),
    ("ns", 1723813200000000000, "2024-08-16T13:00:00Z"),
    ("ns", 1723813200000000001, "2024-08-16T13:00:00.000000001Z"),
    ("ns", 1723813200120000000, "2024-08-16T13:00:00.12Z"),
    ("us", -500000, "1969-12-31T23:59:59.5Z"),
])
@pytest.mark.parametrize("tz", [None, "UTC", "America/New_York", "+05:30"])
def test_timestamps_in_utc_with_fraction_only_when_not_zero(unit, raw, expected, tz):
    array = pa.array([raw, None], pa.int64()).cast(pa.timestamp(unit, tz=tz))
    assert text(array) == [expected, None]


def test_timestamp_with_zone_is_converted_to_utc():
    when = dt.datetime(2024, 8, 31, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-1)))
    array = pa.array([when], pa.timestamp("us", tz="-01:00"))
    assert text(array) == ["2024-09-01T00:30:00Z"]


def test_naive_timestamp_is_utc():
    array = pa.array([dt.datetime(2024, 8, 16, 13, 0, 0)], pa.timestamp("us"))
    assert text(array) == ["2024-08-16T13:00:00Z"]


@pytest.mark.parametrize("arrow_type", [pa.date32(), pa.date64()])
def test_dates_are_midnight_utc(arrow_type):
    assert text(pa.array([dt.date(2024, 2, 29), None], arrow_type)) == ["2024-02-29T00:00:00Z", None]


def test_dictionary_encoded_strings():
    array = pa.array(["Usage", "Tax", "Usage", None]).dictionary_encode()
    assert text(array) == ["Usage", "Tax", "Usage", None]


def test_dictionary_encoded_numbers():
    array = pa.array([1.5, 1e22, 1.5]).dictionary_encode()
    assert text(array) == ["1.5", "10000000000000000000000", "1.5"]


def test_null_column_and_large_string():
    assert text(pa.nulls(3)) == [None, None, None]
    assert text(pa.array(["a", None], pa.large_string())) == ["a", None]
    assert text(pa.array(["a", None, ""], pa.string())) == ["a", None, ""]


@pytest.mark.parametrize("arrow_type, name", [
    (pa.bool_(), "bool"),
    (pa.binary(), "binary"),
    (pa.list_(pa.int64()), "list"),
    (pa.struct([("a", pa.int64())]), "struct"),
    (pa.time32("s"), "time32"),
    (pa.duration("s"), "duration"),
    (pa.dictionary(pa.int32(), pa.binary()), "binary"),
])
def test_unsupported_types_are_named(arrow_type, name):
    problem = type_problem(arrow_type)
    assert problem is not None and name in problem
    with pytest.raises(UnsupportedColumnType) as err:
        column_to_text(pa.array([None], arrow_type))
    assert name in str(err.value)


@pytest.mark.parametrize("arrow_type", [
    pa.string(), pa.large_string(), pa.int32(), pa.float64(), pa.float32(), pa.decimal128(10, 2),
    pa.decimal256(50, 5), pa.timestamp("ns", tz="UTC"), pa.date32(), pa.null(),
    pa.dictionary(pa.int32(), pa.string()),
])
def test_supported_types_have_no_problem(arrow_type):
    assert type_problem(arrow_type) is None


def test_sliced_input_is_handled():
    array = pa.array([1e22, 0.5, 1e-7, 2.0], pa.float64()).slice(1, 2)
    assert text(array) == ["0.5", "0.0000001"]


# --- the kernel path for decimals of up to 18 digits, and the kinds validation relies on ---

from hypothesis import given, settings as hyp_settings, strategies as hyp  # noqa: E402,F811

from anycost.inputs.typed_text import NUMBER, TIMESTAMP, text_and_kind  # noqa: E402
from anycost.config import RowSettings


@hyp_settings(max_examples=200, deadline=None)
@given(hyp.integers(1, 18).flatmap(lambda precision: hyp.tuples(
    hyp.just(precision), hyp.integers(0, precision),
    hyp.lists(hyp.one_of(hyp.none(), hyp.integers(-(10 ** precision) + 1, 10 ** precision - 1)), max_size=40),
    hyp.integers(0, 5))))
def test_small_decimals_render_exactly_with_their_scale(case):
    precision, scale, unscaled, offset = case
    values = [None if u is None else Decimal(u).scaleb(-scale) for u in unscaled]
    array = pa.array([None] * offset + values, pa.decimal128(precision, scale)).slice(offset)
    text, kind = text_and_kind(array)
    assert kind == NUMBER
    expected = [None if v is None else format(v.quantize(Decimal(1).scaleb(-scale)), "f") for v in values]
    expected = [e[1:] if e and e.startswith("-") and Decimal(e) == 0 else e for e in expected]
    assert text.to_pylist() == expected
    assert all(e is None or "E" not in e for e in text.to_pylist())


def test_kinds_say_what_validation_may_skip():
    assert text_and_kind(pa.array([1.5, 2.0]))[1] == NUMBER
    assert text_and_kind(pa.array([1.5, float("nan")]))[1] is None  # nan must still be rejected
    assert text_and_kind(pa.array([3], pa.int64()))[1] == NUMBER
    assert text_and_kind(pa.array([0], pa.timestamp("s")))[1] == TIMESTAMP
    assert text_and_kind(pa.array(["12"]))[1] is None
    assert text_and_kind(pa.array([Decimal("1E+30")], pa.decimal128(38, 0)))[1] == NUMBER


def test_a_typed_column_in_the_wrong_role_is_still_validated():
    import io
    import numpy as np
    import pyarrow.parquet as pq
    from anycost.inputs import normalise, readers
    buffer = io.BytesIO()
    pq.write_table(pa.table({"time/usage_start": pa.array([1, 2], pa.int64()),
                             "cost/cost": pa.array([0, 1000], pa.timestamp("s"))}), buffer)
    [text] = list(readers.read_batches(io.BytesIO(buffer.getvalue()), "t.parquet", "parquet"))
    result = normalise.normalise_batch(text.batch, normalise.SourceBatch("t.parquet", (0,), np.array([1, 2])),
                                       RowSettings(connection_id="c"))
    assert result.chunks == [] and len(result.rejects) == 2
    assert "time/usage_start" in result.rejects[0]["reason"] and "cost/cost" in result.rejects[0]["reason"]
