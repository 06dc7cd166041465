"""anycost.inputs.rows: Python values and typed record batches become the text the file path gives them;
values with no CBF form reject their row with a reason; the same rows in any order or split
give byte-identical bodies."""
import datetime as dt
import json
import random
from decimal import Decimal

import pyarrow as pa
import pytest

from anycost.inputs import normalise, rows, typed_text
from anycost.bodies import packing
from anycost.config import RowSettings

START, COST, AMOUNT = "time/usage_start", "cost/cost", "usage/amount"
SETTINGS = RowSettings(connection_id="c1")


def text_of(value, column=COST):
    result = rows.rows_to_text([{START: "2024-01-01T00:00:00Z", column: value}])
    assert not result.rejects, result.rejects
    return result.batch.column(column)[0].as_py()


@pytest.mark.parametrize("value,text", [
    ("12.50", "12.50"),
    (7, "7"),
    (-3, "-3"),
    (10 ** 30, "1" + "0" * 30),
    (0.1, "0.1"),
    (1.1, "1.1"),
    (1e22, "10000000000000000000000"),
    (1e-7, "0.0000001"),
    (2.5e-10, "0.00000000025"),
    (Decimal("1.50"), "1.50"),
    (Decimal("1E+2"), "100"),
    (Decimal("-1.5E-3"), "-0.0015"),
])
def test_numbers_render_as_the_file_path_does(value, text):
    assert text_of(value) == text


def test_float_text_is_its_shortest_round_trip_decimal():
    for value in [random.Random(seed).uniform(-1e6, 1e6) for seed in range(200)] + [1e60, 1e-60, 123456789.123456789]:
        text = text_of(value)
        assert "e" not in text.lower() and float(text) == value


@pytest.mark.parametrize("value,text", [
    (dt.datetime(2024, 3, 1, 1, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))), "2024-02-29T23:30:00Z"),
    (dt.datetime(2024, 3, 1, 1, 30, 0, 250000), "2024-03-01T01:30:00.25Z"),
    (dt.datetime(2024, 3, 1, 1, 30, tzinfo=dt.timezone.utc), "2024-03-01T01:30:00Z"),
    (dt.date(2024, 3, 1), "2024-03-01T00:00:00Z"),
])
def test_times_render_as_utc(value, text):
    assert text_of(value, START) == text


def test_mixed_types_in_one_column_each_render_their_own_way():
    values = ["1.5", 2, 0.25, Decimal("3.10"), None]
    result = rows.rows_to_text([{START: "2024-01-01T00:00:00Z", COST: v} for v in values])
    assert result.batch.column(COST).to_pylist() == ["1.5", "2", "0.25", "3.10", None]


@pytest.mark.parametrize("value,reason", [
    (True, "cost/cost: a value of type bool has no Common Bill Format text form"),
    (b"12", "cost/cost: a value of type bytes has no Common Bill Format text form"),
    ([1], "cost/cost: a value of type list has no Common Bill Format text form"),
    (float("nan"), "cost/cost: nan is not a finite number"),
    (float("inf"), "cost/cost: inf is not a finite number"),
    (Decimal("NaN"), "cost/cost: Decimal('NaN') is not a finite number"),
])
def test_values_without_a_text_form_reject_their_row_only(value, reason):
    good = {START: "2024-01-01T00:00:00Z", COST: 1}
    result = rows.rows_to_text([good, {START: "2024-01-02T00:00:00Z", COST: value}, good])
    assert result.batch.num_rows == 2
    assert result.rejects == [{"reason": reason,
                               "values": {START: "2024-01-02T00:00:00Z", COST: repr(value)}}]


def test_an_unknown_column_rejects_the_rows_that_use_it_but_the_stream_column_is_kept():
    data = [{START: "2024-01-01T00:00:00Z", COST: "1", "conn": "a"},
            {START: "2024-01-01T00:00:00Z", COST: "1", "conn": "a", "colour": "red"}]
    result = rows.rows_to_text(data, extra_columns=("conn",))
    assert result.batch.column("conn").to_pylist() == ["a"]
    assert result.rejects[0]["reason"] == "column 'colour' is not a Common Bill Format column"


def test_normalise_rows_counts_every_row_and_rejects_invalid_ones():
    data = [{START: dt.datetime(2024, 1, 5, 3), COST: Decimal("1.25")},
            {START: "2024-01-05T04:00:00Z", COST: "not money"},
            {START: "2024-02-01T00:00:00Z", COST: 2, "lineitem/type": False},
            {}]
    result = rows.normalise_rows(data, SETTINGS)
    assert result.rows_in == 4
    assert [r["reason"] for r in result.rejects] == [
        "lineitem/type: a value of type bool has no Common Bill Format text form",
        "cost/cost: 'not money' is not a decimal number",
        "time/usage_start is required and is empty; cost/cost is required and is empty"]
    assert [(key, chunk.order, chunk.row_count) for key, chunk in result.chunks] == [(("c1", "2024-01"), None, 1)]


@pytest.mark.parametrize("value,sent", [
    (Decimal("-0.00"), "0"),  # a negative zero is sent as 0, as from a file
    (Decimal("-0.5"), "-0.5"),
    (Decimal("12.340"), "12.340"),
])
def test_decimals_are_sent_as_the_file_path_sends_them(value, sent):
    result = rows.normalise_rows([{START: "2024-01-01T00:00:00Z", COST: value}, {START: "2024-01-01T00:00:00Z", COST: 1}],
                                 SETTINGS)
    (_, chunk), = result.chunks
    assert json.loads(b"[" + chunk.json_rows()[:-1] + b"]")[0][COST] == sent


def test_decimal_text_is_exactly_format_f_whatever_the_exponent():
    """A column of Decimals, None between them: tiny, huge, zero with a scale, negative zero
    and random scales all get `format(v, "f")`, never an exponent."""
    generator = random.Random(11)
    values = [Decimal("1E-8"), Decimal("0E-8"), Decimal("1E+2"), Decimal("-1.5E-12"), Decimal("5E+30"),
              Decimal("0.0000001"), Decimal("-0.00")]
    values += [Decimal(generator.randrange(-10**12, 10**12)).scaleb(generator.randrange(-20, 8)) for _ in range(500)]
    column = [None if i % 7 == 0 else v for i, v in enumerate(values)]
    text, _, bad = rows._column_to_text(COST, column, rows._RowProblems(len(column)))
    assert text.to_pylist() == [None if v is None else format(v, "f") for v in column] and bad is None
    assert not any("E" in t for t in text.to_pylist() if t)


def test_a_decimal_wider_than_cbf_allows_is_rejected_by_validation():
    result = rows.normalise_rows([{START: "2024-01-01T00:00:00Z", COST: Decimal("1" * 70)}], SETTINGS)
    assert result.chunks == [] and "is out of range" in result.rejects[0]["reason"]


def test_record_batches_with_typed_columns_render_like_dicts():
    batch = pa.RecordBatch.from_pydict({
        START: pa.array([dt.datetime(2024, 1, 1, 5)], pa.timestamp("s", tz="UTC")),
        COST: pa.array([Decimal("1.50")], pa.decimal128(10, 2)),
        AMOUNT: pa.array([0.1], pa.float64()),
        "lineitem/type": pa.array([True]),
    })
    result = rows.record_batch_to_text(batch)
    assert result.batch.num_rows == 0
    assert result.rejects == [{"reason": "lineitem/type has type bool, which has no Common Bill Format text form",
                               "values": {START: "2024-01-01T05:00:00Z", COST: "1.50", AMOUNT: "0.1",
                                          "lineitem/type": "True"}}]
    good = rows.record_batch_to_text(batch.drop_columns(["lineitem/type"]))
    assert good.batch.to_pylist() == [{START: "2024-01-01T05:00:00Z", COST: "1.50", AMOUNT: "0.1"}]
    assert good.batch.schema.field(START).metadata == {typed_text.KIND_KEY: typed_text.TIMESTAMP}


def bodies_of(batches, operation="sum", max_body_bytes=2000):
    settings = RowSettings(connection_id="c1", operation=operation)
    chunks = [chunk for data in batches for _, chunk in rows.normalise_rows(data, settings).chunks]
    plan = packing.plan_stream_month("c1", "2024-01", chunks, operation, max_body_bytes)
    assert plan.refused is None
    return [(b.body, b.idempotency_key) for b in plan.bodies]


@pytest.mark.parametrize("operation", ["sum", "replace_hourly"])
def test_the_same_rows_in_any_order_and_split_give_the_same_bodies(operation):
    data = [{START: dt.datetime(2024, 1, 1 + i % 3, i % 24), COST: Decimal(i) / 7, "resource/id": f"r{i % 5}"}
            for i in range(120)]
    data += data[:10]  # repeated rows stay repeated
    expected = bodies_of([data], operation)
    assert len(expected) > 3
    shuffled = data[:]
    random.Random(1).shuffle(shuffled)
    assert bodies_of([shuffled[:7], shuffled[7:70], shuffled[70:]], operation) == expected
    assert bodies_of([[row] for row in reversed(data)], operation) == expected
    # A different row gives different bodies: the comparison can fail.
    assert bodies_of([data[1:]], operation) != expected


def test_canonical_bodies_keep_each_hour_whole_for_replace_hourly():
    data = [{START: dt.datetime(2024, 1, 1, h % 4, m), COST: 1} for h in range(4) for m in range(30)]
    random.Random(2).shuffle(data)
    bodies = bodies_of([data], "replace_hourly", max_body_bytes=2500)
    hours = [{row[START][:13] for row in json.loads(body)["data"]} for body, _ in bodies]
    assert len(bodies) > 1
    assert sorted(h for body_hours in hours for h in body_hours) == [f"2024-01-01T0{h}" for h in range(4)]
