"""Broken and hostile input: a clear message naming the file and row, no traceback, nothing posted."""
import gzip
import os

import pyarrow as pa
import pytest

from tests.support import read_dead_letters, run_cli, write_parquet

GOOD = b"2024-08-01T00:00:00Z,1.5,r1\n"
HEADER = b"time/usage_start,cost/cost,resource/id\n"


@pytest.fixture
def emu(emulator):
    """The shared emulator fixture (conftest.py) under this file's short name."""
    return emulator


def _write(tmp_path, name, data):
    path = tmp_path / "in" / name
    os.makedirs(path.parent, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def _run(emu, tmp_path, path, capsys, *extra):
    code, report, printed = run_cli(["--input", path, "--connection_id", "c1", f"--api_url={emu.url}",
                                     f"--report_path={tmp_path}/report.json",
                                     f"--dead_letter_path={tmp_path}/dead/rejected", *extra], capsys)
    assert "Traceback" not in printed
    return code, report, printed


@pytest.mark.parametrize("name, data, row, reason", [
    ("utf8.csv", HEADER + GOOD + b"2024-08-01T00:00:00Z,2,caf\xe9\n", 2, "resource/id is not valid UTF-8"),
    ("ragged-long.csv", HEADER + GOOD + b"2024-08-01T00:00:00Z,2,r2,extra\n" + GOOD, 2, "has 4 fields where the header has 3"),
    ("ragged-short.csv", HEADER + GOOD + GOOD + b"2024-08-01T00:00:00Z\n", 3, "has 1 fields where the header has 3"),
    ("control.csv", HEADER + GOOD + b"2024-08-01T00:00:00Z,2,r\x07x\n", 2, "resource/id contains a control character"),
    ("traversal.csv", b"connection_id," + HEADER + b"c1," + GOOD + b"%2F," + GOOD, 2, "not a valid connection id"),
    ("huge.csv", HEADER + GOOD + b'2024-08-01T00:00:00Z,2,"' + b"x" * 10_000_000 + b'"\n', 2, "cannot fit in a body"),
])
def test_bad_rows_go_to_the_dead_letter_and_nothing_is_posted(emu, tmp_path, capsys, name, data, row, reason):
    path = _write(tmp_path, name, data)
    extra = ["--stream_column", "connection_id"] if name == "traversal.csv" else []
    if extra:
        code, report, printed = run_cli(["--input", path, *extra, f"--api_url={emu.url}",
                                         f"--report_path={tmp_path}/report.json",
                                         f"--dead_letter_path={tmp_path}/dead/rejected"], capsys)
    else:
        code, report, printed = _run(emu, tmp_path, path, capsys)
    assert code == 1 and emu.post_count == 0
    dead = read_dead_letters(report)
    assert len(dead) == 1 and dead[0]["file"] == path and dead[0]["row"] == row
    assert reason in dead[0]["reason"]
    assert "NOTHING POSTED" in printed


@pytest.mark.parametrize("name, data, message", [
    ("noheader.csv", GOOD + GOOD, "is the header missing"),
    ("dupheader.csv", b"time/usage_start,cost/cost,cost/cost\n" + GOOD, "appears more than once"),
    ("corrupt.parquet", b"PAR1 this is not parquet at all", "cannot be read as parquet"),
    ("text.txt", GOOD, "unknown format"),
])
def test_unreadable_files_stop_the_run_before_it_starts(emu, tmp_path, capsys, name, data, message):
    path = _write(tmp_path, name, data)
    code, report, printed = _run(emu, tmp_path, path, capsys)
    assert code == 3 and report is None and emu.post_count == 0
    assert message in printed and path in printed


def test_a_parquet_column_of_an_unsupported_type_is_named(emu, tmp_path, capsys):
    path = write_parquet(str(tmp_path / "in" / "typed.parquet"), {
        "time/usage_start": pa.array(["2024-08-01T00:00:00Z"]), "cost/cost": pa.array(["1"]),
        "resource/id": pa.array([[1, 2]], pa.list_(pa.int64()))})
    code, _, printed = _run(emu, tmp_path, path, capsys)
    assert code == 3 and "'resource/id'" in printed and "has type list<" in printed and path in printed


def test_a_truncated_gzip_blocks_every_post_and_names_the_file(emu, tmp_path, capsys):
    lines = HEADER + b"".join(b"2024-08-01T00:00:00Z,%d.5,r%d\n" % (i, i) for i in range(50_000))
    path = _write(tmp_path, "cut.csv.gz", gzip.compress(lines)[:-2000])
    code, report, printed = _run(emu, tmp_path, path, capsys)
    assert code == 1 and emu.post_count == 0
    assert report["file_errors"] and path in report["file_errors"][0]
    assert "NOTHING POSTED" in printed and path in printed


def test_a_bom_is_ignored(emu, tmp_path, capsys):
    path = _write(tmp_path, "bom.csv", b"\xef\xbb\xbf" + HEADER + GOOD)
    code, report, printed = _run(emu, tmp_path, path, capsys)
    assert code == 0, printed
    assert emu.rows("c1", "2024-08") == [{"time/usage_start": "2024-08-01T00:00:00Z", "cost/cost": "1.5",
                                          "resource/id": "r1"}]


@pytest.mark.parametrize("data", [b"", HEADER])
def test_an_empty_input_sends_nothing_and_says_so(emu, tmp_path, capsys, data):
    path = _write(tmp_path, "empty.csv", data)
    code, report, printed = _run(emu, tmp_path, path, capsys)
    assert code == 0 and emu.post_count == 0
    assert report["rows_read"] == 0 and "no rows" in printed


def test_a_connection_id_flag_with_traversal_is_a_usage_error(tmp_path, capsys):
    code, _, printed = run_cli(["--input", "x.csv", "--connection_id", "../x"], capsys)
    assert code == 2 and "--connection_id" in printed
