"""Random bytes and random CSV and Parquet shapes: the reader and validator never crash.

Every failure must be an `InputFileError` (a file-level message) or a rejected row with a
reason; every row that passes must be valid JSON with string values in the right month.
"""
import csv
import datetime as dt
import gzip
import io
import json
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anycost import cbf
from anycost.inputs import normalise, readers, values
from anycost_emulator import validate_body
from anycost.config import RowSettings

# An exception Arrow swallows inside a callback is a bug here, not a warning.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
SETTINGS = RowSettings(connection_id="fuzz", max_body_bytes=20_000)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _consume(data, fmt, name="fuzz"):
    """Read and validate a whole file; returns (good rows, rejects) or the InputFileError."""
    path = f"{name}.{fmt}"
    try:
        info = readers.inspect(io.BytesIO(data), path, fmt)
        if readers.header_problems(info):
            return None
        good, rejects = [], []
        for index, text in enumerate(readers.read_batches(io.BytesIO(data), path, fmt)):
            source = normalise.SourceBatch(path, (0, 0, index), text.row_numbers)
            result = normalise.normalise_batch(text.batch, source, SETTINGS)
            rejects += text.rejects + result.rejects
            for (connection, month), chunk in result.chunks:
                rows = json.loads(b"[" + chunk.json_rows()[:-1] + b"]")
                assert len(rows) == chunk.row_count
                for row in rows:
                    assert all(isinstance(v, str) and v for v in row.values())
                    assert row[cbf.USAGE_START][:7] == month
                # The emulator's strictness is the oracle: whatever the input, what passes
                # validation here must pass the API's rules there.
                assert validate_body({"month": month, "operation": "sum", "data": rows}) == []
                good += rows
        for record in rejects:
            assert record["reason"] and record["file"] == path and isinstance(record["row"], int)
        return good, rejects
    except readers.InputFileError as err:
        assert path in str(err)
        return err


def _quoted(cell):
    return b'"' + cell.replace(b'"', b'""') + b'"'


_CELL_BYTES = st.one_of(st.binary(max_size=40), st.sampled_from([b"2024-08-16T13:00:00Z", b"12.5", b"Usage"]))


@FAST
@given(st.lists(st.tuples(_CELL_BYTES, _CELL_BYTES, _CELL_BYTES), min_size=1, max_size=20),
       st.sampled_from(["csv", "csv.gz"]))
def test_random_bytes_in_every_cell_reach_the_rows_and_lose_none(cells, fmt):
    """Random bytes, quoted, in each cell of a file with a valid header: the reader and the
    validator get past the header every time, and every row is delivered or rejected with
    a reason. (Random bytes as a whole file are `tests/test_readers.py`'s job.)"""
    data = b"time/usage_start,cost/cost,lineitem/description\n" + b"".join(
        b",".join(_quoted(cell) for cell in row) + b"\n" for row in cells)
    outcome = _consume(gzip.compress(data) if fmt == "csv.gz" else data, fmt)
    assert outcome is not None, "stopped at the header"
    assert not isinstance(outcome, readers.InputFileError), outcome
    good, rejects = outcome
    assert len(good) + len(rejects) == len(cells)
    valid_time = [row for row in cells if row[0] == b"2024-08-16T13:00:00Z"]
    assert len(good) <= len(valid_time)


@FAST
@given(st.lists(st.tuples(st.text(max_size=30), st.text(max_size=30), st.text(max_size=30)), max_size=20))
def test_random_text_in_every_parquet_cell_reaches_the_rows_and_loses_none(cells):
    columns = list(zip(*cells)) if cells else [(), (), ()]
    table = pa.table({name: pa.array(list(values_), pa.string()) for name, values_ in
                      zip(["time/usage_start", "cost/cost", "lineitem/description"], columns)})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=5)
    outcome = _consume(buffer.getvalue(), "parquet")
    assert outcome is not None and not isinstance(outcome, readers.InputFileError), outcome
    good, rejects = outcome
    assert len(good) + len(rejects) == len(cells)


@FAST
@given(st.binary(max_size=500))
def test_random_bytes_after_a_valid_header_never_crash(tail):
    _consume(b"time/usage_start,cost/cost,resource/id\n" + tail, "csv")


_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
_VALUES = st.one_of(
    _TEXT,
    st.sampled_from(["2024-08-01T00:00:00Z", "2024-08-31T23:30:00-01:00", "2024-02-30 00:00:00",
                     "1.5E+2", "-0", "NaN", "1e999999", "12.50", "", " 3 ", "Usage", "Tax"]),
)


@FAST
@given(st.lists(st.sampled_from(["time/usage_start", "cost/cost", "resource/id", "usage/amount",
                                 "lineitem/type", "resource/tag:team", "lineitem/description"]),
                min_size=1, max_size=6, unique=True),
       st.lists(st.lists(_VALUES, min_size=0, max_size=8), max_size=30))
def test_random_csv_shapes_are_read_or_rejected_row_by_row(header, rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    outcome = _consume(buffer.getvalue().encode("utf-8"), "csv")
    assert not isinstance(outcome, readers.InputFileError)
    good, rejects = outcome
    non_blank = [r for r in rows if r and r != [""] * len(r)]
    assert len(good) + len(rejects) >= len([r for r in non_blank if len(r) == len(header)])


_ARROW_COLUMNS = {
    "string": lambda n, rng: pa.array([str(rng.integers(0, 9)) if rng.random() > 0.2 else None for _ in range(n)]),
    "int": lambda n, rng: pa.array(rng.integers(-10**12, 10**12, n)),
    "float": lambda n, rng: pa.array(rng.choice([0.1, 1e22, 1.25e-05, float("nan"), float("inf"), -2.5], n)),
    "decimal": lambda n, rng: pa.array([Decimal(int(x)).scaleb(-4) for x in rng.integers(-10**9, 10**9, n)],
                                       pa.decimal128(18, 4)),
    "timestamp_tz": lambda n, rng: pa.array(rng.integers(1.7e18, 1.8e18, n), pa.timestamp("ns", tz="Asia/Kolkata")),
    "timestamp": lambda n, rng: pa.array(rng.integers(1.7e15, 1.8e15, n), pa.timestamp("us")),
    "date": lambda n, rng: pa.array([dt.date(2024, 8, 1 + int(d)) for d in rng.integers(0, 30, n)]),
    "dictionary": lambda n, rng: pa.array(rng.choice(["Usage", "Tax", "bogus"], n)).dictionary_encode(),
    "null": lambda n, rng: pa.nulls(n),
}


@FAST
@given(st.dictionaries(st.sampled_from(["time/usage_start", "cost/cost", "usage/amount", "lineitem/type",
                                        "resource/id", "time/usage_end"]),
                       st.sampled_from(sorted(_ARROW_COLUMNS)), min_size=1, max_size=6),
       st.integers(0, 40), st.integers(0, 2**31))
def test_random_parquet_shapes_are_read_or_rejected_row_by_row(columns, rows, seed):
    rng = np.random.default_rng(seed)
    table = pa.table({name: _ARROW_COLUMNS[kind](rows, rng) for name, kind in columns.items()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=7)
    outcome = _consume(buffer.getvalue(), "parquet")
    assert not isinstance(outcome, readers.InputFileError)
    good, rejects = outcome
    assert len(good) + len(rejects) == rows


_TIMES = st.builds(
    lambda d, h, m, frac, zone, sep: f"2024-08-{d:02d}{sep}{h:02d}:{m:02d}:00{frac}{zone}",
    st.integers(1, 31), st.integers(0, 23), st.integers(0, 59), st.sampled_from(["", ".5", ".123456789"]),
    st.sampled_from(["Z", "", "+05:30", "-01:00", "+00:00"]), st.sampled_from(["T", " "]))
_NUMBERS = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-10**9, max_value=10**9).map(str),
    st.sampled_from(["1.5E+2", "-2.5e-3", "+.5", "0", "-0.000", "7."]))
_FREE_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from('"\\,\n\t'),
                     max_size=20)


@FAST
@given(st.lists(st.tuples(_TIMES, _NUMBERS, _FREE_TEXT, _FREE_TEXT, st.sampled_from(["", "Usage", "Credit"])),
                min_size=1, max_size=25))
def test_mostly_valid_csv_rows_arrive_with_their_text_intact(rows):
    header = ["time/usage_start", "cost/cost", "lineitem/description", "resource/tag:team", "lineitem/type",
              "resource/id"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([list(r) + ["res-1"] for r in rows])
    good, rejects = _consume(buffer.getvalue().encode("utf-8"), "csv")
    assert rejects == []  # every row here is valid CBF, whatever its text holds
    # Chunks come month by month (an offset can move a row into September), input order within.
    rows = sorted(rows, key=lambda r: values.render_timestamp(r[0])[:7])
    assert [g.get("lineitem/description", "") for g in good] == [r[2] for r in rows]
    assert [g.get("resource/tag:team", "") for g in good] == [r[3] for r in rows]
    for row, source in zip(good, rows):
        assert Decimal(row["cost/cost"]) == Decimal(source[1].strip())
        assert "E" not in row["cost/cost"].upper() and row["time/usage_start"].endswith("Z")
