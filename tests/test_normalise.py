"""anycost.inputs.normalise: one test per validation rule, then property tests against a slow,
row-by-row reference implementation written here."""
import decimal
import json
import re
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from anycost import cbf, wire
from anycost.inputs import values
from anycost.inputs.chunking import decimal_sum
from anycost.inputs.normalise import SourceBatch, normalise_batch
from anycost.config import RowSettings
from anycost.inputs.dead_letter import dumps_reject

START, END, COST = "time/usage_start", "time/usage_end", "cost/cost"
GOOD = {START: "2024-08-16T13:00:00Z", COST: "12"}


# ----- helpers -------------------------------------------------------------------------------

def make_batch(rows, columns=None):
    """A record batch of string columns from dicts (missing keys are null)."""
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    return pa.RecordBatch.from_arrays(
        [pa.array([row.get(c) for row in rows], pa.string()) for c in columns], names=columns)


def run(rows, columns=None, row_numbers=None, file="in.csv", order=(0, 0, 0), **settings_kw):
    settings_kw.setdefault("connection_id", None if settings_kw.get("stream_column") else "conn1")
    batch = make_batch(rows, columns)
    numbers = np.arange(1, len(rows) + 1) if row_numbers is None else np.asarray(row_numbers)
    return normalise_batch(batch, SourceBatch(file, order, numbers), RowSettings(**settings_kw))


def chunk_rows(chunk):
    """The JSON objects of a chunk, checking the framing (`{...},` per row) on the way."""
    lengths = np.frombuffer(chunk.lengths, np.int32)
    assert len(lengths) == chunk.row_count and int(lengths.sum()) == len(chunk.json_rows())
    out, position = [], 0
    for length in lengths:
        piece = chunk.json_rows()[position:position + length]
        assert piece.startswith(b"{") and piece.endswith(b"},")
        out.append(json.loads(piece[:-1]))
        position += length
    return out


def good_rows(result):
    """{(connection, month): [row dicts]} of a NormalisedBatch."""
    return {key: chunk_rows(chunk) for key, chunk in result.chunks}


def only_reject(result):
    assert len(result.rejects) == 1, result.rejects
    return result.rejects[0]


# ----- accepted rows -------------------------------------------------------------------------

def test_good_row_is_grouped_and_serialised():
    result = run([GOOD])
    assert result.rejects == [] and result.rows_in == 1
    [(key, chunk)] = result.chunks
    assert key == ("conn1", "2024-08")
    assert chunk.json_rows() == b'{"time/usage_start":"2024-08-16T13:00:00Z","cost/cost":"12"},'
    assert chunk.row_count == 1 and chunk.cost_total == "12"


def test_cloudzero_sample_row_unchanged():
    row = {"lineitem/type": "Discount", "resource/service": "Amazon EC2", "resource/id": "i-0123",
           "time/usage_start": "2024-08-16T13:00:00Z", "cost/cost": "-0.5", "usage/amount": "3",
           "resource/tag:Team": "data"}
    assert good_rows(run([row])) == {("conn1", "2024-08"): [row]}


def test_empty_batch():
    result = run([], columns=[START, COST])
    assert result.chunks == [] and result.rejects == [] and result.rows_in == 0


@pytest.mark.parametrize("column", [START, COST])
def test_required_column_missing(column):
    row = {k: v for k, v in GOOD.items() if k != column}
    reject = only_reject(run([row]))
    assert reject["reason"] == f"{column} is required and is empty"


@pytest.mark.parametrize("column", [START, COST])
@pytest.mark.parametrize("empty", ["", None])
def test_required_column_empty(column, empty):
    reject = only_reject(run([{**GOOD, column: empty}], columns=[START, COST]))
    assert reject["reason"] == f"{column} is required and is empty"


@pytest.mark.parametrize("spelling, expected", [
    ("1.5E+2", "150"), ("1.25e-05", "0.0000125"), ("+.5", "0.5"), ("5.", "5"), (" 12 ", "12"),
    ("-0", "0"), ("007", "7"), ("-12.50", "-12.50"),
])
@pytest.mark.parametrize("column", cbf.NUMBER_COLUMNS)
def test_numbers_rendered_plain(column, spelling, expected):
    row = {**GOOD, column: spelling}
    [rows] = good_rows(run([row])).values()
    assert rows[0][column] == expected


@pytest.mark.parametrize("bad", ["NaN", "inf", "-Infinity", "abc", "1_000", "1,5", "1e99999999999999999999",
                                 "1" * 70, "١"])
@pytest.mark.parametrize("column", [COST, "usage/amount", "cost/on_demand_cost"])
def test_bad_numbers_rejected(column, bad):
    reject = only_reject(run([{**GOOD, column: bad}]))
    assert reject["reason"].startswith(f"{column}: ")


@pytest.mark.parametrize("spelling, expected", [
    ("2024-08-16T13:00:00Z", "2024-08-16T13:00:00Z"),
    ("2024-08-16 13:00:00", "2024-08-16T13:00:00Z"),
    ("2024-08-16T13:00:00", "2024-08-16T13:00:00Z"),
    ("2024-08-16T15:00:00+02:00", "2024-08-16T13:00:00Z"),
    ("2024-08-16T13:00:00.123456789Z", "2024-08-16T13:00:00.123456789Z"),
    ("2024-08-16", "2024-08-16T00:00:00Z"),  # a date alone: midnight UTC, as a Parquet date32
])
@pytest.mark.parametrize("column", [START, END])
def test_timestamps_rendered_utc(column, spelling, expected):
    [rows] = good_rows(run([{**GOOD, column: spelling}])).values()
    assert rows[0][column] == expected


@pytest.mark.parametrize("bad", ["2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "2024-13-01T00:00:00Z",
                                 "2024-08-16T25:00:00Z", "2024-02-30", "2024-8-16", "yesterday",
                                 "2024-08-16T13:00:00+0200", "2024-08-16Z"])
@pytest.mark.parametrize("column", [START, END])
def test_bad_timestamps_rejected(column, bad):
    reject = only_reject(run([{**GOOD, column: bad}]))
    assert reject["reason"].startswith(f"{column}: ")


def test_month_is_the_utc_month():
    rows = [{**GOOD, START: "2024-08-31T23:30:00-01:00"}, {**GOOD, START: "2024-09-01T00:30:00+01:00"}]
    grouped = good_rows(run(rows))
    assert list(grouped) == [("conn1", "2024-08"), ("conn1", "2024-09")]
    assert grouped[("conn1", "2024-09")][0][START] == "2024-09-01T00:30:00Z"
    assert grouped[("conn1", "2024-08")][0][START] == "2024-08-31T23:30:00Z"


@pytest.mark.parametrize("kind", sorted(cbf.LINEITEM_TYPES))
def test_lineitem_types_accepted(kind):
    assert run([{**GOOD, "lineitem/type": kind}]).rejects == []


@pytest.mark.parametrize("kind", ["usage", "Refund", " Usage", "Usage "])
def test_unknown_lineitem_type_rejected(kind):
    reject = only_reject(run([{**GOOD, "lineitem/type": kind}]))
    assert reject["reason"].startswith(f"lineitem/type {kind!r} is not one of: Adjustment, ")


def test_empty_lineitem_type_is_absent():
    [rows] = good_rows(run([{**GOOD, "lineitem/type": ""}])).values()
    assert "lineitem/type" not in rows[0]


def test_tag_needs_resource_id():
    reject = only_reject(run([{**GOOD, "resource/tag:env": "prod"}]))
    assert reject["reason"] == "a row with a resource/tag value needs a non-empty resource/id"
    reject = only_reject(run([{**GOOD, "resource/tag:env": "prod", "resource/id": ""}]))
    assert "resource/id" in reject["reason"]


def test_empty_tag_needs_no_resource_id():
    [rows] = good_rows(run([{**GOOD, "resource/tag:env": ""}])).values()
    assert rows == [GOOD]


def test_tag_with_resource_id_accepted():
    row = {**GOOD, "resource/id": "i-1", "resource/tag:env": "prod"}
    assert good_rows(run([row])) == {("conn1", "2024-08"): [row]}


def test_empty_optional_values_left_out():
    row = {**GOOD, "resource/id": "", "lineitem/description": None, "usage/amount": "",
           "cost/discounted_cost": "", END: ""}
    result = run([row])
    [(_, chunk)] = result.chunks
    assert chunk.json_rows() == b'{"time/usage_start":"2024-08-16T13:00:00Z","cost/cost":"12"},'


def test_zero_is_not_empty():
    [rows] = good_rows(run([{**GOOD, "cost/discounted_cost": "0"}])).values()
    assert rows[0]["cost/discounted_cost"] == "0"


def test_columns_in_canonical_order_whatever_the_source_order():
    row = {"resource/tag:b": "2", "cost/cost": "1", "resource/tag:a": "1", "resource/id": "r",
           START: "2024-08-16T13:00:00Z", "lineitem/id": "x"}
    [(_, chunk)] = run([row]).chunks
    keys = list(json.loads(chunk.json_rows()[:-1]))
    assert keys == [START, "lineitem/id", "resource/id", COST, "resource/tag:a", "resource/tag:b"]


@pytest.mark.parametrize("value", [
    'say "hi"', "back\\slash", "two\nlines", "tab\there", "cr\rlf\r\n", 'mix \\" \\\\n',
    "ünïcödé ✓ 日本語 🚀", "\u2028\u2029", "del\x7f", "/slash/",
])
def test_json_escaping(value):
    row = {**GOOD, "lineitem/description": value}
    [(_, chunk)] = run([row]).chunks
    assert json.loads(chunk.json_rows()[:-1].decode("utf-8"))["lineitem/description"] == value


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1b", "\x1f"])
def test_control_characters_rejected(char):
    reject = only_reject(run([{**GOOD, "lineitem/description": f"a{char}b"}]))
    assert reject["reason"] == "lineitem/description contains a control character"


def test_control_character_in_resource_id_rejected():
    reject = only_reject(run([{**GOOD, "resource/id": "i-1\x00"}]))
    assert reject["reason"] == "resource/id contains a control character"


def test_stream_column_is_connection_and_removed():
    rows = [{**GOOD, "stream": "acct-1"}, {**GOOD, "stream": "acct_2"}, {**GOOD, "stream": "acct-1"}]
    result = run(rows, stream_column="stream")
    grouped = good_rows(result)
    assert list(grouped) == [("acct-1", "2024-08"), ("acct_2", "2024-08")]
    assert grouped[("acct-1", "2024-08")] == [GOOD, GOOD]
    for _, chunk in result.chunks:
        assert b"stream" not in chunk.json_rows() and b"acct" not in chunk.json_rows()


@pytest.mark.parametrize("bad", ["../x", "%2F", "a/b", "x" * 129, "a\n", "a b", "é"])
def test_invalid_connection_ids_rejected(bad):
    result = run([{**GOOD, "stream": bad}, {**GOOD, "stream": "ok"}], stream_column="stream")
    reject = only_reject(result)
    assert reject["row"] == 1
    assert reject["reason"].startswith("stream is not a valid connection id")
    assert [key for key, _ in result.chunks] == [("ok", "2024-08")]


def test_empty_connection_id_rejected():
    reject = only_reject(run([{**GOOD, "stream": ""}], stream_column="stream"))
    assert reject["reason"] == "stream (the connection id) is empty"


def test_missing_stream_column_rejects_every_row():
    result = run([GOOD, GOOD], stream_column="stream")
    assert [r["reason"] for r in result.rejects] == ["stream (the connection id) is empty"] * 2


def test_longest_connection_id_accepted():
    result = run([{**GOOD, "stream": "x" * 128}], stream_column="stream")
    assert [key for key, _ in result.chunks] == [("x" * 128, "2024-08")]


def test_row_too_big_for_a_body_rejected_at_the_exact_byte():
    prefix_len = len(b'{"month":"2024-08","operation":"sum","data":[') + len(b"]}")
    base = b'{"time/usage_start":"2024-08-16T13:00:00Z","lineitem/description":"","cost/cost":"12"}'
    fits = "x" * 50
    limit = prefix_len + len(base) + len(fits)
    ok = run([{**GOOD, "lineitem/description": fits}], max_body_bytes=limit)
    assert ok.rejects == [] and len(ok.chunks) == 1
    too_big = run([{**GOOD, "lineitem/description": fits + "x"}], max_body_bytes=limit)
    reject = only_reject(too_big)
    assert f"at most {limit} bytes" in reject["reason"] and "cannot fit" in reject["reason"]


def test_envelope_counts_the_operation():
    assert wire.envelope_bytes("replace_hourly") == len(
        b'{"month":"2024-08","operation":"replace_hourly","data":[]}')


def test_reject_names_file_and_row_number_from_source():
    rows = [GOOD, {**GOOD, COST: "abc"}, GOOD, {START: "", COST: "x"}]
    result = run(rows, row_numbers=[10, 12, 15, 99], file="gs://bucket/bill.csv")
    assert [(r["file"], r["row"]) for r in result.rejects] == [("gs://bucket/bill.csv", 12),
                                                                ("gs://bucket/bill.csv", 99)]
    both = result.rejects[1]["reason"]
    assert "cost/cost" in both and "time/usage_start is required" in both and "; " in both
    assert result.rows_in == 4


def test_reject_keeps_non_empty_original_values():
    row = {**GOOD, COST: "1e", "resource/id": "", "lineitem/description": "d"}
    reject = only_reject(run([row]))
    assert reject["values"] == {START: GOOD[START], COST: "1e", "lineitem/description": "d"}
    assert json.loads(dumps_reject(reject)) == reject


def test_dead_letter_line_keeps_unicode_readable():
    line = dumps_reject({"file": "f", "row": 1, "reason": "r", "values": {"a": "日本"}})
    assert "日本" in line and "\n" not in line


def test_row_with_every_value_empty_does_not_shift_later_rows():
    # A CSV line of only commas: every value is empty. (Arrow's binary_join_element_wise with
    # null_handling="skip" drops such rows from its output, which used to crash the batch.)
    rows = [GOOD, {START: "", COST: "", "resource/id": ""}, {**GOOD, COST: "3"}, {START: None, COST: None}]
    result = run(rows, columns=[START, COST, "resource/id"])
    assert [(r["row"], r["values"]) for r in result.rejects] == [(2, {}), (4, {})]
    assert [r[COST] for r in good_rows(result)[("conn1", "2024-08")]] == ["12", "3"]


def test_batch_with_only_the_stream_column():
    result = run([{"stream": "c1"}, {"stream": "c2"}], stream_column="stream")
    assert result.chunks == [] and [r["row"] for r in result.rejects] == [1, 2]


def test_all_rows_rejected_gives_no_chunks():
    result = run([{START: "bad", COST: "1"}, {START: "2024-01-01T00:00:00Z", COST: "x"}])
    assert result.chunks == [] and len(result.rejects) == 2


def test_chunks_grouped_by_connection_and_month_with_exact_totals():
    rows = [
        {START: "2024-08-01T00:00:00Z", COST: "0.1", "s": "b"},
        {START: "2024-09-01T00:00:00Z", COST: "1E+2", "s": "a"},
        {START: "2024-08-02T00:00:00Z", COST: "0.2", "s": "b"},
        {START: "2024-08-03T00:00:00Z", COST: "-0.3", "s": "b"},
        {START: "2024-08-03T00:00:00Z", COST: "5", "s": "a"},
        {START: "2024-08-03T00:00:00Z", COST: "12345678901234567890.123456789012345678", "s": "a"},
    ]
    result = run(rows, stream_column="s", order=(3, 1, 7))
    keys = [key for key, _ in result.chunks]
    assert keys == [("a", "2024-08"), ("a", "2024-09"), ("b", "2024-08")]
    totals = {key: Decimal(chunk.cost_total) for key, chunk in result.chunks}
    assert totals == {("a", "2024-08"): Decimal("12345678901234567895.123456789012345678"),
                      ("a", "2024-09"): Decimal(100), ("b", "2024-08"): Decimal(0)}
    assert [chunk.order for _, chunk in result.chunks] == [(3, 1, 7, 0), (3, 1, 7, 1), (3, 1, 7, 2)]
    # rows keep their input order inside a chunk
    assert [r[START] for r in good_rows(result)[("b", "2024-08")]] == [
        "2024-08-01T00:00:00Z", "2024-08-02T00:00:00Z", "2024-08-03T00:00:00Z"]


def test_hours_filled_for_replace_hourly_only():
    rows = [{**GOOD, START: "2024-08-01T00:30:00Z"}, {**GOOD, START: "2024-08-03T05:00:00+01:00"}]
    [(_, chunk)] = run(rows, operation="replace_hourly").chunks
    assert np.frombuffer(chunk.hours, np.uint16).tolist() == [0, 2 * 24 + 4]
    [(_, chunk)] = run(rows).chunks
    assert chunk.hours == b""


def test_sliced_batch():
    batch = make_batch([GOOD, {**GOOD, COST: "2"}, {**GOOD, COST: "x"}, {**GOOD, COST: "4"}]).slice(1, 3)
    result = normalise_batch(batch, SourceBatch("f", (0,), np.array([2, 3, 4])), RowSettings(connection_id="c"))
    assert [r["row"] for r in result.rejects] == [3]
    [(_, chunk)] = result.chunks
    assert [r[COST] for r in chunk_rows(chunk)] == ["2", "4"] and chunk.cost_total == "6"


# ----- decimal_sum ---------------------------------------------------------------------------

def plain(value):
    return values.render_number(format(value, "f"))


def exact_total(texts):
    """Python's Decimal with a context wide enough that nothing rounds (the default is 28 digits)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 300
        ctx.traps[decimal.Inexact] = True
        return sum((Decimal(t) for t in texts), Decimal(0))


NARROW = st.decimals(allow_nan=False, allow_infinity=False, places=4, min_value=-10**12, max_value=10**12)
WIDE = st.decimals(allow_nan=False, allow_infinity=False, places=30, min_value=-10**25, max_value=10**25)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(NARROW, WIDE, st.decimals(allow_nan=False, allow_infinity=False, places=0,
                                                    min_value=-10**40, max_value=10**40)),
                min_size=0, max_size=30))
def test_decimal_sum_is_exact(numbers):
    texts = [plain(n) for n in numbers]
    assert decimal_sum(pa.array(texts, pa.string())) == exact_total(texts)


@settings(max_examples=100, deadline=None)
@given(st.lists(NARROW, min_size=1, max_size=40))
def test_decimal_sum_fast_path_is_exact(numbers):
    texts = [plain(n) for n in numbers]
    assert decimal_sum(pa.array(texts, pa.string())) == exact_total(texts)


def test_decimal_sum_examples():
    assert decimal_sum(pa.array(["0.1"] * 10)) == Decimal(1)
    assert decimal_sum(pa.array(["1", "-0.25", "0.125"])) == Decimal("0.875")
    wide = "9" * 37 + ".5"
    assert decimal_sum(pa.array([wide, wide])) == Decimal("1" + "9" * 37)
    assert decimal_sum(pa.array([], pa.string())) == 0


# ----- property tests against a slow reference ------------------------------------------------

ALLOWED_TYPES = sorted(cbf.LINEITEM_TYPES)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def reference(rows, columns, numbers, file, settings_):
    """Row by row, in plain Python: rejected row numbers and {(conn, month): (json rows, total)}."""
    rejected, grouped = [], {}
    envelope = wire.envelope_bytes(settings_.operation)
    for number, row in zip(numbers, rows):
        present = {c: row.get(c) for c in columns if row.get(c) not in (None, "")}
        bad = False
        if settings_.stream_column:
            connection = present.pop(settings_.stream_column, None)
            bad |= not cbf.is_valid_connection_id(connection)
        else:
            connection = settings_.connection_id
        rendered = {}
        for name, value in present.items():
            try:
                if name in cbf.TIMESTAMP_COLUMNS:
                    value = values.render_timestamp(value)
                elif name in cbf.NUMBER_COLUMNS:
                    value = values.render_number(value)
            except values.InvalidValue:
                bad = True
                continue
            rendered[name] = value
        bad |= any(required not in present for required in cbf.REQUIRED_COLUMNS)
        bad |= "lineitem/type" in rendered and rendered["lineitem/type"] not in cbf.LINEITEM_TYPES
        bad |= any(cbf.is_tag_column(c) for c in rendered) and "resource/id" not in rendered
        bad |= any(_CONTROL.search(v) for v in rendered.values())
        text = "{" + ",".join(json.dumps(name) + ":" + json.dumps(rendered[name], ensure_ascii=False)
                              for name in cbf.canonical_column_order(rendered)) + "}"
        bad |= len(text.encode()) + envelope > settings_.max_body_bytes
        if bad:
            rejected.append(int(number))
            continue
        rows_, costs = grouped.setdefault((connection, rendered[START][:7]), ([], []))
        rows_.append(text.encode() + b",")
        costs.append(Decimal(rendered[COST]))
    return rejected, {key: (b"".join(r), exact_total(c)) for key, (r, c) in grouped.items()}


TIMESTAMPS = st.one_of(
    st.sampled_from(["2024-08-16T13:00:00Z", "2024-08-31T23:30:00-01:00", "2024-09-01 00:00:00",
                     "2024-08-16T13:00:00.5Z", "2024-02-30T00:00:00Z", "2024-08-16", "", " ", "nope",
                     "2024-07-31T22:00:00-03:00", "2024-08-01T01:00:00+02:00", "2023-12-31T23:59:59.999Z"]),
    st.builds(lambda d, h, m, z, sep: f"2024-{m:02d}-{d:02d}{sep}{h:02d}:00:00{z}",
              st.integers(1, 31), st.integers(0, 24), st.integers(1, 12),
              st.sampled_from(["", "Z", "+01:00", "-05:30", "+00:00"]), st.sampled_from(["T", " "])),
)
NUMBERS = st.one_of(
    st.sampled_from(["0", "-0", "12", "-12.5", "1.5E+2", "1.25e-05", "+.5", "5.", " 7 ", "", "NaN", "inf",
                     "abc", "1_000", "007", "0.0000125", "9" * 40, "1" * 70, "1e999999999999999999999"]),
    st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-10**9, max_value=10**9).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=20, min_value=-10**20,
                max_value=10**20).map(lambda d: format(d, "E")),
)
FREE_TEXT = st.one_of(st.text(max_size=12), st.sampled_from(['"q"', "a\\b", "l\nl", "t\tt", "", "\x00"]))
COLUMN_VALUES = {
    START: TIMESTAMPS,
    END: TIMESTAMPS,
    COST: NUMBERS,
    "usage/amount": NUMBERS,
    "lineitem/type": st.sampled_from(ALLOWED_TYPES + ["", "usage", "Bogus"]),
    "resource/id": st.sampled_from(["", "i-1", "arn:aws:ec2:i-2", "r\x01"]),
    "resource/tag:env": st.sampled_from(["", "prod", "dev team"]),
    "lineitem/description": FREE_TEXT,
    "stream": st.sampled_from(["c1", "c2", "c-3", "", "../x", "%2F", "x" * 129]),
}


@st.composite
def batches(draw):
    optional = [c for c in COLUMN_VALUES if c not in (START, COST, "stream")]
    columns = [c for c in (START, COST) if draw(st.booleans()) or draw(st.integers(0, 9))]
    columns += draw(st.lists(st.sampled_from(optional), unique=True, max_size=len(optional)))
    use_stream = draw(st.booleans())
    if use_stream:
        columns.append("stream")
    columns = draw(st.permutations(columns))
    assume(columns)
    n = draw(st.integers(0, 25))
    rows = [{c: draw(st.one_of(st.none(), COLUMN_VALUES[c]) if draw(st.integers(0, 9)) == 0
                     else COLUMN_VALUES[c]) for c in columns} for _ in range(n)]
    numbers = np.cumsum(draw(st.lists(st.integers(1, 3), min_size=n, max_size=n)), dtype=np.int64)
    settings_ = RowSettings(connection_id=None if use_stream else "conn1",
                         stream_column="stream" if use_stream else None,
                         operation=draw(st.sampled_from(["sum", "replace_hourly"])),
                         max_body_bytes=draw(st.sampled_from([5_000_000, 220, 160])))
    return rows, columns, numbers, settings_


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_matches_row_by_row_reference(case):
    rows, columns, numbers, settings_ = case
    batch = make_batch(rows, columns)
    result = normalise_batch(batch, SourceBatch("f.csv", (1, 2), numbers), settings_)
    expected_rejects, expected = reference(rows, columns, numbers, "f.csv", settings_)

    assert result.rows_in == len(rows)
    assert [r["row"] for r in result.rejects] == expected_rejects
    for record in result.rejects:
        assert record["file"] == "f.csv" and record["reason"]
    got = {key: (chunk.json_rows(), Decimal(chunk.cost_total)) for key, chunk in result.chunks}
    assert got == expected
    assert [key for key, _ in result.chunks] == sorted(expected)
    assert len({chunk.order for _, chunk in result.chunks}) == len(result.chunks)
    for (connection, month), chunk in result.chunks:
        for row in chunk_rows(chunk):  # every row is JSON with string values in its month
            assert all(isinstance(v, str) for v in row.values())
            assert row[START].startswith(month) and row[START].endswith("Z")
            assert set(row) <= set(cbf.STANDARD_COLUMNS) | {"resource/tag:env"}
        if settings_.operation == "replace_hourly":
            hours = np.frombuffer(chunk.hours, np.uint16)
            starts = [r[START] for r in chunk_rows(chunk)]
            assert hours.tolist() == [(int(s[8:10]) - 1) * 24 + int(s[11:13]) for s in starts]
