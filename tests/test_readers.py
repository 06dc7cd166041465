"""anycost.inputs.readers: CSV, gzip CSV and Parquet as text batches with row numbers; broken files."""
import decimal
import gc
import gzip
import io
import weakref

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from anycost.inputs import normalise, readers, sources
from anycost.inputs.readers import InputFileError, inspect, read_batches
from anycost.config import RowSettings

HEADER = b"time/usage_start,cost/cost,lineitem/description\n"


def read_all(data, fmt="csv", path="in.csv", row_groups=None):
    """(rows as dicts, their row numbers, rejects) over every batch of a file held in memory."""
    rows, numbers, rejects = [], [], []
    for text in read_batches(io.BytesIO(data), path, fmt, row_groups):
        assert text.batch.num_rows == len(text.row_numbers)
        assert all(t == pa.string() for t in text.batch.schema.types)
        rows += text.batch.to_pylist()
        numbers += [int(n) for n in text.row_numbers]
        rejects += text.rejects
    return rows, numbers, rejects


def parquet_bytes(table, **kw):
    sink = io.BytesIO()
    pq.write_table(table, sink, **kw)
    return sink.getvalue()


# ----- file names ------------------------------------------------------------------------------

@pytest.mark.parametrize("path, fmt", [
    ("a.csv", "csv"), ("A.CSV", "csv"), ("gs://b/x.csv.gz", "csv.gz"), ("x.parquet", "parquet"),
    ("x.json", None), ("x.gz", None), ("csv", None), ("x.csv.bz2", None),
])
def test_file_format(path, fmt):
    assert readers.file_format(path) == fmt


# ----- CSV -----------------------------------------------------------------------------------

def test_csv_values_stay_text_exactly():
    data = HEADER + b"2024-08-16T13:00:00Z,1.10,007\n2024-08-16T13:00:00Z,1e5,NULL\n2024-08-16 13:00:00,-0,NA\n"
    rows, numbers, rejects = read_all(data)
    assert rows == [
        {"time/usage_start": "2024-08-16T13:00:00Z", "cost/cost": "1.10", "lineitem/description": "007"},
        {"time/usage_start": "2024-08-16T13:00:00Z", "cost/cost": "1e5", "lineitem/description": "NULL"},
        {"time/usage_start": "2024-08-16 13:00:00", "cost/cost": "-0", "lineitem/description": "NA"},
    ]
    assert numbers == [1, 2, 3] and rejects == []


def test_csv_quoted_commas_quotes_and_newlines():
    data = HEADER + (b'2024-08-16T13:00:00Z,1,"a, b"\n'
                     b'2024-08-16T13:00:00Z,2,"say ""hi"""\n'
                     b'2024-08-16T13:00:00Z,3,"line1\nline2\r\nline3"\n'
                     b'2024-08-16T13:00:00Z,4,plain\n')
    rows, numbers, rejects = read_all(data)
    assert [r["lineitem/description"] for r in rows] == ["a, b", 'say "hi"', "line1\nline2\r\nline3", "plain"]
    assert numbers == [1, 2, 3, 4] and rejects == []


def test_csv_empty_fields_are_empty_text():
    rows, _, _ = read_all(HEADER + b"2024-08-16T13:00:00Z,,\n")
    assert rows == [{"time/usage_start": "2024-08-16T13:00:00Z", "cost/cost": "", "lineitem/description": ""}]


def test_csv_header_only():
    assert read_all(HEADER) == ([], [], [])
    assert read_all(HEADER.rstrip(b"\n")) == ([], [], [])


def test_csv_empty_file():
    assert read_all(b"") == ([], [], [])


def test_csv_bom_is_removed():
    rows, _, _ = read_all(b"\xef\xbb\xbf" + HEADER + b"2024-08-16T13:00:00Z,1,x\n")
    assert list(rows[0]) == ["time/usage_start", "cost/cost", "lineitem/description"]
    info = inspect(io.BytesIO(b"\xef\xbb\xbf" + HEADER), "f.csv", "csv")
    assert info.columns == ["time/usage_start", "cost/cost", "lineitem/description"]


def test_csv_crlf_line_endings():
    rows, numbers, _ = read_all(HEADER.replace(b"\n", b"\r\n") + b"2024-08-16T13:00:00Z,1,x\r\n")
    assert rows == [{"time/usage_start": "2024-08-16T13:00:00Z", "cost/cost": "1", "lineitem/description": "x"}]
    assert numbers == [1]


def test_csv_lone_cr_line_endings():
    data = HEADER.replace(b"\n", b"\r") + b"2024-08-16T13:00:00Z,1,x\r2024-08-16T13:00:00Z,2,y\r"
    assert inspect(io.BytesIO(data), "f.csv", "csv").columns == ["time/usage_start", "cost/cost",
                                                                 "lineitem/description"]
    rows, numbers, _ = read_all(data)
    assert [r["cost/cost"] for r in rows] == ["1", "2"] and numbers == [1, 2]


def test_csv_header_read_differently_by_arrow_is_refused():
    # A quoted line break inside a column name: the peeked header and Arrow's disagree, and
    # Arrow would infer a float column. The file is refused rather than read as floats.
    data = b'"time/usage_start","cost\ncost"\n2024-08-16T13:00:00Z,1.50\n'
    with pytest.raises(InputFileError, match=r"^q\.csv: the header could not be read consistently"):
        read_all(data, path="q.csv")


def test_csv_ragged_rows_rejected_with_their_row_numbers():
    data = HEADER + (b"2024-08-16T13:00:00Z,1,a\n"
                     b"2024-08-16T13:00:00Z,2,b,extra\n"      # too many fields
                     b'2024-08-16T13:00:00Z,3,"multi\nline"\n'
                     b"2024-08-16T13:00:00Z,4\n"               # too few fields
                     b"2024-08-16T13:00:00Z,5,e\n")
    rows, numbers, rejects = read_all(data)
    assert [r["cost/cost"] for r in rows] == ["1", "3", "5"]
    assert numbers == [1, 3, 5]
    assert [(r["file"], r["row"]) for r in rejects] == [("in.csv", 2), ("in.csv", 4)]
    assert rejects[0]["reason"] == "the row has 4 fields where the header has 3"
    assert rejects[1]["reason"] == "the row has 2 fields where the header has 3"
    assert rejects[0]["values"] == {"text": "2024-08-16T13:00:00Z,2,b,extra"}


def test_csv_ragged_row_numbers_across_batches(monkeypatch):
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 4096)
    lines = []
    for i in range(1, 2001):
        lines.append(b"2024-08-16T13:00:00Z,%d,x,y\n" % i if i % 97 == 0 else b"2024-08-16T13:00:00Z,%d,x\n" % i)
    rows, numbers, rejects = read_all(HEADER + b"".join(lines))
    bad = [i for i in range(1, 2001) if i % 97 == 0]
    assert sorted(r["row"] for r in rejects) == bad
    assert numbers == [i for i in range(1, 2001) if i % 97]
    assert [int(r["cost/cost"]) for r in rows] == numbers  # each row's number is its own


def test_csv_invalid_utf8_rejects_the_row_naming_the_column():
    data = HEADER + (b"2024-08-16T13:00:00Z,1,ok\n"
                     b"2024-08-16T13:00:00Z,2,caf\xe9\n"
                     b"2024-08-16T13:00:00Z,3,fine\n")
    rows, numbers, rejects = read_all(data)
    assert [r["cost/cost"] for r in rows] == ["1", "3"] and numbers == [1, 3]
    [reject] = rejects
    assert reject["row"] == 2 and reject["file"] == "in.csv"
    assert "lineitem/description" in reject["reason"] and "UTF-8" in reject["reason"]
    assert reject["values"]["lineitem/description"] == "caf\\xe9"


def test_csv_invalid_utf8_header_is_a_file_error():
    with pytest.raises(InputFileError, match=r"bad\.csv.*UTF-8"):
        read_all(b"time/usage_start,co\xffst\n", path="bad.csv")


def test_csv_duplicated_header_is_a_file_error():
    with pytest.raises(InputFileError, match=r"dup\.csv.*repeats"):
        read_all(b"cost/cost,cost/cost\n1,2\n", path="dup.csv")
    info = inspect(io.BytesIO(b"cost/cost,cost/cost\n1,2\n"), "dup.csv", "csv")
    assert any("more than once" in p for p in readers.header_problems(info))


def test_csv_gzip():
    data = gzip.compress(HEADER + b"2024-08-16T13:00:00Z,1.5,x\n" * 3)
    rows, numbers, _ = read_all(data, fmt="csv.gz", path="in.csv.gz")
    assert len(rows) == 3 and numbers == [1, 2, 3] and rows[0]["cost/cost"] == "1.5"


def test_csv_truncated_gzip_names_the_file():
    data = gzip.compress(HEADER + b"2024-08-16T13:00:00Z,1.5,x\n" * 5000)
    with pytest.raises(InputFileError, match=r"^cut\.csv\.gz: "):
        read_all(data[: len(data) // 2], fmt="csv.gz", path="cut.csv.gz")


def test_csv_not_gzip_names_the_file():
    with pytest.raises(InputFileError, match=r"^x\.csv\.gz: "):
        read_all(b"plain text, not gzip\n", fmt="csv.gz", path="x.csv.gz")
    with pytest.raises(InputFileError, match=r"^x\.csv\.gz: "):
        inspect(io.BytesIO(b"plain text"), "x.csv.gz", "csv.gz")


def test_csv_ten_megabyte_field_is_read_and_then_rejected_as_too_big():
    big = b"x" * 10_000_000
    data = HEADER + b'2024-08-16T13:00:00Z,1,"' + big + b'"\n2024-08-16T13:00:00Z,2,small\n'
    texts = list(read_batches(io.BytesIO(data), "big.csv", "csv"))
    rejects, chunks = [], []
    for text in texts:
        assert text.rejects == []
        source = normalise.SourceBatch("big.csv", (0,), text.row_numbers)
        result = normalise.normalise_batch(text.batch, source, RowSettings(connection_id="c"))
        rejects += result.rejects
        chunks += result.chunks
    assert sum(t.batch.num_rows for t in texts) == 2
    [reject] = rejects
    assert reject["row"] == 1 and "cannot fit in a body" in reject["reason"]
    [(key, chunk)] = chunks
    assert chunk.row_count == 1 and b"small" in chunk.json_rows()


def test_inspect_csv_reads_only_the_header():
    class HeaderOnly(io.BytesIO):
        def read(self, size=-1):
            data = super().read(size)
            assert self.tell() <= (1 << 20)  # never the whole (large) file
            return data
    data = HEADER + b"2024-08-16T13:00:00Z,1,x\n" * 100_000
    info = inspect(HeaderOnly(data), "f.csv", "csv")
    assert info.columns == ["time/usage_start", "cost/cost", "lineitem/description"] and info.format == "csv"


@pytest.mark.parametrize("columns, stream, expected", [
    (["time/usage_start", "cost/cost"], None, []),
    (["time/usage_start", "cost/cost", "bogus"], None, ["'bogus' is not a Common Bill Format column"]),
    (["time/usage_start", "cost/cost", "acct"], "acct", []),
    (["time/usage_start", "cost/cost"], "acct", ["has no 'acct' column"]),
    (["time/usage_start", "cost/cost", "resource/tag:bad key"], None, ["tag column"]),
    (["2024-08-16T13:00:00Z", "12"], None, ["not a Common Bill Format column", "is the header missing?"]),
])
def test_header_problems(columns, stream, expected):
    info = readers.FileInfo("f.csv", "csv", columns)
    problems = readers.header_problems(info, stream)
    for words in expected:
        assert any(words in p and p.startswith("f.csv: ") for p in problems), problems
    if not expected:
        assert problems == []


# ----- Parquet -------------------------------------------------------------------------------

def typed_table(n=10):
    return pa.table({
        "time/usage_start": pa.array(np.arange(n, dtype=np.int64) * 3_600_000_000 + 1_722_470_400_000_000,
                                     pa.timestamp("us", tz="UTC")),
        "cost/cost": pa.array([decimal.Decimal(i) / 100 for i in range(n)], pa.decimal128(12, 2)),
        "usage/amount": pa.array([i * 0.5 for i in range(n)], pa.float64()),
        "resource/region": pa.array(["us-east-1" if i % 2 else None for i in range(n)]).dictionary_encode(),
        "lineitem/id": pa.array(range(n), pa.int64()),
    })


def test_parquet_typed_columns_become_text():
    rows, numbers, rejects = read_all(parquet_bytes(typed_table(3)), "parquet", "t.parquet")
    assert rows == [
        {"time/usage_start": "2024-08-01T00:00:00Z", "cost/cost": "0.00", "usage/amount": "0",
         "resource/region": None, "lineitem/id": "0"},
        {"time/usage_start": "2024-08-01T01:00:00Z", "cost/cost": "0.01", "usage/amount": "0.5",
         "resource/region": "us-east-1", "lineitem/id": "1"},
        {"time/usage_start": "2024-08-01T02:00:00Z", "cost/cost": "0.02", "usage/amount": "1",
         "resource/region": None, "lineitem/id": "2"},
    ]
    assert numbers == [1, 2, 3] and rejects == []


@pytest.mark.parametrize("groups", [None, [0], [2], [1, 2], [0, 2, 5], [5, 0], [9], []])
def test_parquet_row_group_subsets_keep_file_row_numbers(groups):
    table = typed_table(100)
    data = parquet_bytes(table, row_group_size=10)
    rows, numbers, _ = read_all(data, "parquet", "t.parquet", groups)
    selected = range(10) if groups is None else groups
    expected = [g * 10 + i + 1 for g in selected for i in range(10)]
    assert sorted(numbers) == sorted(expected)
    assert [int(r["lineitem/id"]) + 1 for r in rows] == numbers  # each row keeps its own number


def test_parquet_row_numbers_across_batches(monkeypatch):
    monkeypatch.setattr(readers, "PARQUET_BATCH_ROWS", 7)
    data = parquet_bytes(typed_table(100), row_group_size=10)
    rows, numbers, _ = read_all(data, "parquet", "t.parquet", [3, 4, 8])
    assert numbers == list(range(31, 51)) + list(range(81, 91))
    assert [int(r["lineitem/id"]) + 1 for r in rows] == numbers


def test_inspect_parquet_reports_row_groups_and_columns():
    data = parquet_bytes(typed_table(100), row_group_size=25)
    info = inspect(io.BytesIO(data), "t.parquet", "parquet")
    assert info.row_groups == 4 and info.columns == typed_table(1).column_names


def test_parquet_unsupported_type_names_file_and_column():
    data = parquet_bytes(pa.table({"cost/cost": ["1"], "lineitem/description": [True]}))
    problems = readers.header_problems(inspect(io.BytesIO(data), "b.parquet", "parquet"))
    assert problems == ["b.parquet: column 'lineitem/description' has type bool, which has no "
                        "Common Bill Format text form"]
    with pytest.raises(InputFileError, match=r"^b\.parquet: column 'lineitem/description' has type bool"):
        read_all(data, "parquet", "b.parquet")


def test_parquet_columns_left_out_are_never_type_checked_or_read():
    data = parquet_bytes(pa.table({"time/usage_start": ["2024-08-01T00:00:00Z"], "cost/cost": ["1"],
                                   "flag": [True], "labels": [["a"]]}))
    settings = RowSettings(connection_id="c", unknown_columns="drop")
    assert readers.header_problems(inspect(io.BytesIO(data), "b.parquet", "parquet"), settings=settings) == []
    [text] = read_batches(io.BytesIO(data), "b.parquet", "parquet", **sources.reader_options(settings))
    assert text.batch.schema.names == ["time/usage_start", "cost/cost"]


@pytest.mark.parametrize("data", [b"", b"not a parquet file at all", b"PAR1" + b"\0" * 100 + b"PAR1"])
def test_corrupt_parquet_names_the_file(data):
    with pytest.raises(InputFileError, match=r"^x\.parquet: "):
        read_all(data, "parquet", "x.parquet")
    with pytest.raises(InputFileError, match=r"^x\.parquet: "):
        inspect(io.BytesIO(data), "x.parquet", "parquet")


def test_truncated_parquet_names_the_file():
    data = parquet_bytes(typed_table(1000))
    with pytest.raises(InputFileError, match=r"^x\.parquet: "):
        read_all(data[:-100], "parquet", "x.parquet")


def test_csv_named_parquet_names_the_file():
    with pytest.raises(InputFileError, match=r"^x\.parquet: "):
        read_all(HEADER + b"2024-08-16T13:00:00Z,1,x\n", "parquet", "x.parquet")


# ----- streaming: bounded memory, deterministic (no timing) ------------------------------------

def _stream_and_watch(iterator):
    """Iterate, keeping only weak references; return (rows, most batches alive at once,
    most Arrow bytes allocated at once)."""
    gc.collect()
    baseline = pa.total_allocated_bytes()
    refs, most_alive, most_bytes, rows = [], 0, 0, 0
    for text in iterator:
        rows += text.batch.num_rows
        refs.append(weakref.ref(text.batch))
        del text
        most_alive = max(most_alive, sum(r() is not None for r in refs))
        most_bytes = max(most_bytes, pa.total_allocated_bytes() - baseline)
    return rows, len(refs), most_alive, most_bytes


def test_csv_reader_streams(monkeypatch):
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 64 << 10)
    line = b"2024-08-16T13:00:00Z,12.345,some description of the line item\n"
    count = 120_000
    data = HEADER + line * count  # about 7 MB, over a hundred blocks
    rows, batches, most_alive, most_bytes = _stream_and_watch(read_batches(io.BytesIO(data), "f.csv", "csv"))
    assert rows == count and batches > 50
    assert most_alive <= 2
    assert most_bytes < len(data) / 8, (most_bytes, len(data))


def test_parquet_reader_streams(monkeypatch):
    monkeypatch.setattr(readers, "PARQUET_BATCH_ROWS", 5_000)
    n = 200_000
    table = pa.table({"time/usage_start": pa.array(["2024-08-16T13:00:00Z"] * n),
                      "cost/cost": pa.array([f"{i}.{i % 100:02d}" for i in range(n)]),
                      "lineitem/id": pa.array(np.arange(n, dtype=np.int64))})
    data = parquet_bytes(table, row_group_size=10_000, compression="none")
    text_bytes = sum(c.nbytes for c in table.columns)
    del table
    rows, batches, most_alive, most_bytes = _stream_and_watch(
        read_batches(io.BytesIO(data), "f.parquet", "parquet"))
    assert rows == n and batches == n // 5_000
    assert most_alive <= 2
    assert most_bytes < text_bytes / 4, (most_bytes, text_bytes)


# ----- hostile input: anything either reads or fails with InputFileError ----------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

CSV_PIECES = st.sampled_from([b",", b'"', b"\n", b"\r\n", b"\xff", b"\xef\xbb\xbf", b"\x00", b"1.5E+2",
                              b"2024-08-16T13:00:00Z", b"cost/cost", b"time/usage_start", b"resource/tag:x",
                              b"", b" ", b"nan", "é".encode(), b"\xe9"])


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_ragged_row_with_invalid_utf8_is_rejected_alone():
    # Invalid bytes are marked before Arrow sees them, so the parser can hand the ragged row
    # to the handler; the file survives and the row is named with its bytes shown as \\xNN.
    data = HEADER + b"2024-08-16T13:00:00Z,1,a\n2024-08-16T13:00:00Z,\xe9,b,extra\n2024-08-16T13:00:00Z,3,c\n"
    rows, numbers, rejects = read_all(data, path="r.csv")
    assert numbers == [1, 3] and [r["lineitem/description"] for r in rows] == ["a", "c"]
    assert [(r["row"], r["values"]["text"]) for r in rejects] == [(2, "2024-08-16T13:00:00Z,\\xe9,b,extra")]


def test_invalid_utf8_split_across_read_chunks_is_still_found(monkeypatch):
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 64)
    body = b"".join(b"2024-08-16T13:00:00Z,%d,r%d\n" % (i, i) for i in range(20))
    data = HEADER + body + "2024-08-16T13:00:00Z,9,caf\u00e9\n".encode() + b"2024-08-16T13:00:00Z,9,x\xc3\n"
    rows, numbers, rejects = read_all(data, path="r.csv")
    assert rows[-1]["lineitem/description"] == "caf\u00e9" and len(rows) == 21
    assert [(r["row"], r["reason"]) for r in rejects] == [(22, "lineitem/description is not valid UTF-8")]


def _survives(data, fmt, path):
    settings_ = RowSettings(connection_id="c", max_body_bytes=300)
    try:
        info = inspect(io.BytesIO(data), path, fmt)
        readers.header_problems(info)
        for index, text in enumerate(read_batches(io.BytesIO(data), path, fmt)):
            source = normalise.SourceBatch(path, (0, index), text.row_numbers)
            result = normalise.normalise_batch(text.batch, source, settings_)
            for record in text.rejects + result.rejects:
                assert record["file"] == path and record["reason"] and record["row"] >= 1
    except InputFileError as err:
        assert str(err).startswith(path + ": ")


# pyarrow decodes a ragged row's text as UTF-8 before calling the handler; when that fails it
# prints an "Exception ignored" warning and fails the file (see the test above).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CSV_PIECES, max_size=60).map(b"".join), st.booleans())
def test_random_csv_never_crashes(body, with_header):
    data = (b"time/usage_start,cost/cost,lineitem/description\n" if with_header else b"") + body
    _survives(data, "csv", "r.csv")
    _survives(gzip.compress(data), "csv.gz", "r.csv.gz")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data):
    for fmt, path in (("csv", "r.csv"), ("csv.gz", "r.csv.gz"), ("parquet", "r.parquet")):
        _survives(data, fmt, path)


def test_a_row_longer_than_a_read_block_is_named_as_such(monkeypatch):
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 1 << 20)
    data = HEADER + b'2024-08-16T13:00:00Z,1,"' + b"x" * (3 << 20) + b'"\n'
    with pytest.raises(InputFileError, match=r"^big\.csv: a row is longer than 1 MB"):
        read_all(data, path="big.csv")
