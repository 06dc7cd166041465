"""The real pipeline, run through its CLI, against the emulator on 127.0.0.1."""
import csv
import glob
import json
import os
from decimal import Decimal

import pyarrow as pa
import pytest

from anycost_emulator import Emulator
from tests.support import (TEST_KEY, emulator_totals, expected_totals, read_dead_letters, run_cli,
                           write_csv, write_parquet)

# CloudZero's public example adaptor's CBF file (Apache-2.0; see tests/fixtures/README.md).
FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "cloudzero-example-cbf.csv")
HEADER = ["connection_id", "time/usage_start", "cost/cost", "resource/id", "lineitem/description"]



def _common(emulator, tmp_path):
    return [f"--api_url={emulator.url}", f"--report_path={tmp_path}/report.json",
            f"--dead_letter_path={tmp_path}/dead/rejected"]


def test_cloudzero_example_file_arrives_unchanged(emulator, tmp_path, capsys):
    code, report, printed = run_cli(["--input", FIXTURE, "--connection_id", "example-conn"]
                                    + _common(emulator, tmp_path), capsys)
    assert code == 0, printed
    with open(FIXTURE, newline="") as handle:
        original = list(csv.DictReader(handle))
    assert emulator.rows("example-conn", "2024-09") == original
    assert report["rows_read"] == 6 and report["bodies_sent"] == 1
    assert report["streams"]["example-conn"]["2024-09"]["status"] == "delivered"
    assert Decimal(report["streams"]["example-conn"]["2024-09"]["cost"]) == sum(Decimal(r["cost/cost"]) for r in original)
    assert "example-conn" in printed and "2024-09" in printed and "result: OK" in printed


def _mixed_inputs(tmp_path):
    """Three formats, three streams, three months, several files per glob."""
    expected = []
    for part in range(3):
        rows = []
        for i in range(40):
            conn = f"stream-{(i + part) % 3}"
            month = ("2024-07", "2024-08", "2024-09")[i % 3]
            cost = f"{i}.{part}{i % 7}1" if i % 5 else f"-{i}E-3"
            rows.append([conn, f"{month}-0{1 + i % 9}T{i % 24:02d}:00:00Z", cost, f"res-{i}", f"item \"{i}\", part {part}"])
            expected.append((conn, month, str(Decimal(cost))))
        suffix = ".csv.gz" if part == 2 else ".csv"
        write_csv(str(tmp_path / "in" / f"csv-{part}{suffix}"), HEADER, rows, gzip_it=(part == 2))
    costs = [Decimal("1.0001"), Decimal("-2.5"), Decimal("3")]
    write_parquet(str(tmp_path / "in" / "typed.parquet"), {
        "connection_id": pa.array(["stream-9", "stream-9", "stream-0"]).dictionary_encode(),
        "time/usage_start": pa.array([1722470400_000_000, 1725148800_000_000, 1725148800_500_000],
                                     pa.timestamp("us", tz="UTC")),
        "cost/cost": pa.array(costs, pa.decimal128(10, 4)),
    })
    expected += [("stream-9", "2024-08", "1.0001"), ("stream-9", "2024-09", "-2.5"), ("stream-0", "2024-09", "3")]
    return expected


def test_many_files_formats_streams_and_months_arrive_exactly(emulator, tmp_path, capsys):
    expected = _mixed_inputs(tmp_path)
    code, report, printed = run_cli(
        ["--input", str(tmp_path / "in" / "*.csv"), "--input", str(tmp_path / "in" / "*.csv.gz"),
         "--input", str(tmp_path / "in" / "*.parquet"), "--stream_column", "connection_id",
         "--max_body_bytes", "2000", "--labels=team=finops"] + _common(emulator, tmp_path), capsys)
    assert code == 0, printed
    assert emulator_totals(emulator) == expected_totals(expected)
    assert emulator.concurrency_violations == 0
    assert emulator.max_body_bytes_seen <= 2000
    assert report["rows_read"] == len(expected) and report["rows_rejected"] == 0
    assert report["bodies_sent"] == emulator.applied_drops > 9  # several bodies per stream-month
    for conn, months in expected_totals(expected).items():
        for month, (rows, cost) in months.items():
            entry = report["streams"][conn][month]
            assert (entry["rows"], Decimal(entry["cost"]), entry["status"]) == (rows, cost, "delivered")


def test_a_stream_month_needing_many_bodies_keeps_row_order(emulator, tmp_path, capsys):
    rows = [["one", f"2024-08-{1 + i // 100:02d}T{i % 24:02d}:00:00Z", f"{i}.01", f"r{i}", "x" * (i % 50)]
            for i in range(1500)]
    write_csv(str(tmp_path / "in" / "big.csv"), HEADER, rows)
    code, report, printed = run_cli(["--input", str(tmp_path / "in" / "big.csv"), "--stream_column",
                                     "connection_id", "--max_body_bytes", "5000"] + _common(emulator, tmp_path), capsys)
    assert code == 0, printed
    stored = emulator.rows("one", "2024-08")
    assert [r["resource/id"] for r in stored] == [f"r{i}" for i in range(1500)]
    assert report["streams"]["one"]["2024-08"]["bodies"] == emulator.applied_drops > 30
    assert emulator.max_body_bytes_seen <= 5000
    # one request at a time per connection: request windows never overlap
    windows = sorted((r.started, r.ended) for r in emulator.requests if r.connection == "one")
    assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:]))


def _bad_rows_input(tmp_path):
    rows = [
        ["c1", "2024-08-01T00:00:00Z", "1.5", "r1", "ok"],
        ["c1", "not a time", "2", "r2", "bad time"],
        ["c1", "2024-08-01T00:00:00Z", "NaN", "r3", "bad cost"],
        ["../x", "2024-08-01T00:00:00Z", "1", "r4", "path traversal"],
        ["c1", "2024-08-02T00:00:00Z", "2.5", "r5", "ok"],
    ]
    return write_csv(str(tmp_path / "in" / "bad.csv"), HEADER, rows)


def test_rejects_over_the_limit_post_nothing_and_fill_the_dead_letter(emulator, tmp_path, capsys):
    path = _bad_rows_input(tmp_path)
    code, report, printed = run_cli(["--input", path, "--stream_column", "connection_id"]
                                    + _common(emulator, tmp_path), capsys)
    assert code == 1
    assert emulator.post_count == 0
    assert report["blocked"] and "nothing was posted" in report["blocked"]
    assert report["rows_rejected"] == 3
    dead = sorted(read_dead_letters(report), key=lambda r: r["row"])
    assert [(d["row"], d["file"]) for d in dead] == [(2, path), (3, path), (4, path)]
    assert "time/usage_start" in dead[0]["reason"] and dead[0]["values"]["time/usage_start"] == "not a time"
    assert "cost/cost" in dead[1]["reason"] and dead[1]["values"]["cost/cost"] == "NaN"
    assert "connection id" in dead[2]["reason"] and dead[2]["values"]["connection_id"] == "../x"
    assert "NOTHING POSTED" in printed and report["dead_letter_files"][0] in printed


def test_rejects_within_the_limit_send_the_good_rows(emulator, tmp_path, capsys):
    path = _bad_rows_input(tmp_path)
    code, report, printed = run_cli(["--input", path, "--stream_column", "connection_id",
                                     "--max_rejected_rows", "3"] + _common(emulator, tmp_path), capsys)
    assert code == 0, printed
    assert emulator_totals(emulator) == {"c1": {"2024-08": (2, Decimal("4.0"))}}
    assert len(read_dead_letters(report)) == 3


def test_unknown_column_stops_before_anything_runs(emulator, tmp_path, capsys):
    path = write_csv(str(tmp_path / "in" / "x.csv"), ["time/usage_start", "cost/cost", "costcenter"],
                     [["2024-08-01T00:00:00Z", "1", "a"]])
    code, report, printed = run_cli(["--input", path, "--connection_id", "c1"] + _common(emulator, tmp_path), capsys)
    assert code == 3 and report is None
    assert "'costcenter'" in printed and path in printed
    assert emulator.post_count == 0


def test_a_pattern_matching_nothing_is_an_error(emulator, tmp_path, capsys):
    code, _, printed = run_cli(["--input", str(tmp_path / "nothing*.csv"), "--connection_id", "c1"]
                               + _common(emulator, tmp_path), capsys)
    assert code == 3 and "matches no file" in printed


@pytest.mark.parametrize("args, message", [
    (["--connection_id", "../etc"], "--connection_id"),
    (["--connection_id", "c1", "--max_body_bytes", "5000001"], "--max_body_bytes"),
    (["--connection_id", "c1", "--stream_column", "x"], "not allowed with"),
    (["--connection_id", "c1", "--api_url", "http://api.example.com"], "https"),
    (["--connection_id", "c1", "--dry_run"], "--output_dir"),
    (["--connection_id", "c1", "--api_key=abc"], "never a flag"),
])
def test_usage_errors_exit_2_with_one_line(tmp_path, capsys, args, message):
    code, _, printed = run_cli(["--input", "x.csv"] + args, capsys)
    assert code == 2
    assert message in printed and len(printed.strip().splitlines()) == 1


def test_missing_key_is_a_usage_error(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("CLOUDZERO_API_KEY", raising=False)
    code, _, printed = run_cli(["--input", FIXTURE, "--connection_id", "c1"], capsys)
    assert code == 2 and "CLOUDZERO_API_KEY" in printed


def test_dry_run_writes_deterministic_bodies_and_posts_nothing(emulator, tmp_path, capsys):
    _mixed_inputs(tmp_path)
    outputs = []
    for attempt in range(2):
        out = tmp_path / f"bodies{attempt}"
        code, report, printed = run_cli(["--input", str(tmp_path / "in" / "*"), "--stream_column", "connection_id",
                                         "--max_body_bytes", "1500", "--dry_run", "--output_dir", str(out)]
                                        + _common(emulator, tmp_path), capsys)
        assert code == 0, printed
        files = sorted(glob.glob(str(out / "*" / "*" / "*.json")))
        outputs.append([(os.path.relpath(f, out), open(f, "rb").read()) for f in files])
    assert outputs[0] == outputs[1] and len(outputs[0]) > 6
    assert emulator.post_count == 0
    for name, body in outputs[0]:
        parsed = json.loads(body)
        conn, month, _ = name.split(os.sep)
        assert parsed["month"] == month and parsed["operation"] == "sum" and len(body) <= 1500
        assert all(r["time/usage_start"].startswith(month) for r in parsed["data"])


def test_a_refused_key_fails_the_run_and_never_shows_the_key(monkeypatch, tmp_path, capsys):
    wrong = "wrong-key-3c9d2a7b1e"
    monkeypatch.setenv("CLOUDZERO_API_KEY", wrong)
    with Emulator(api_key=TEST_KEY) as emu:
        code, report, printed = run_cli(["--input", FIXTURE, "--connection_id", "c1",
                                         f"--api_url={emu.url}", f"--report_path={tmp_path}/report.json"], capsys)
    assert code == 1
    entry = report["streams"]["c1"]["2024-09"]
    assert entry["status"] == "failed" and "403" in entry["messages"][0]
    # The month check reads the connection's drops first: that read meets the 403.
    assert "could not read the rows CloudZero holds (HTTP 403" in printed  # the log line was captured
    assert "--skip_month_check" in entry["messages"][0] and emu.post_count == 0
    everything = printed + json.dumps(report)
    assert wrong not in everything and TEST_KEY not in everything


def test_multi_process_runner_pickles_everything(emulator, tmp_path):
    _mixed_inputs(tmp_path)
    from pipeline import main as cli
    code = cli.main(["--input", str(tmp_path / "in" / "*"), "--stream_column", "connection_id",
                     "--max_body_bytes", "3000", "--runner=DirectRunner",
                     "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
                    + _common(emulator, tmp_path))
    assert code == 0
    with open(tmp_path / "report.json") as handle:
        report = json.load(handle)
    assert report["rows_read"] == 123 and report["bodies_sent"] == emulator.applied_drops
    assert emulator.concurrency_violations == 0


def test_a_failing_job_ends_with_one_clear_line(emulator, tmp_path, capsys, monkeypatch):
    from pipeline import graph

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(graph, "write_report", broken)
    code, _, printed = run_cli(["--input", FIXTURE, "--connection_id", "c1"] + _common(emulator, tmp_path),
                               capsys)
    assert code == 1
    assert "error: the Beam job did not finish" in printed and "disk full" in printed
    assert "Traceback" not in printed


def test_bodies_are_byte_identical_across_runners(emulator, tmp_path):
    _mixed_inputs(tmp_path)
    from pipeline import main as cli
    outputs = []
    for mode, workers in (("in_memory", 1), ("multi_processing", 2), ("multi_threading", 2)):
        out = tmp_path / f"bodies-{mode}"
        code = cli.main(["--input", str(tmp_path / "in" / "*"), "--stream_column", "connection_id",
                         "--max_body_bytes", "1500", "--dry_run", "--output_dir", str(out),
                         f"--report_path={tmp_path}/report-{mode}.json", f"--dead_letter_path={tmp_path}/dead",
                         "--runner=DirectRunner", f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"])
        assert code == 0
        outputs.append({str(f.relative_to(out)): f.read_bytes() for f in sorted(out.glob("*/*/*.json"))})
    assert outputs[0] == outputs[1] == outputs[2] and len(outputs[0]) > 6


def test_a_partly_delivered_month_reports_what_is_in_cloudzero_and_what_is_not(emulator, tmp_path, capsys):
    from anycost_emulator.faults import FaultConfig
    rows = [["c1", f"2024-08-{1 + i % 28:02d}T00:00:00Z", f"{i}.{i % 10}1", f"res-{i}", "item"] for i in range(60)]
    write_csv(str(tmp_path / "in" / "month.csv"), HEADER, rows)
    emulator.configure(faults=FaultConfig(forbid_after_drops=2))
    code, report, printed = run_cli(["--input", str(tmp_path / "in" / "month.csv"), "--stream_column",
                                     "connection_id", "--max_body_bytes", "1000"] + _common(emulator, tmp_path),
                                    capsys)
    assert code == 1
    month = report["streams"]["c1"]["2024-08"]
    held_rows, held_cost = emulator_totals(emulator)["c1"]["2024-08"]
    assert month["delivered_part"]["bodies"] == 2 and month["delivered_part"]["rows"] == held_rows
    assert Decimal(month["delivered_part"]["cost"]) == held_cost
    assert month["undelivered_part"]["rows"] == 60 - held_rows
    assert Decimal(month["undelivered_part"]["cost"]) == sum(Decimal(r[2]) for r in rows) - held_cost
    lines = [line.split() for line in printed.splitlines() if line.startswith("c1 ")]
    assert [line[2] for line in lines] == [str(held_rows), str(60 - held_rows)], printed
    assert [Decimal(line[5]) for line in lines] == [held_cost, sum(Decimal(r[2]) for r in rows) - held_cost]
    assert lines[0][6] == "delivered" and lines[1][6] == "failed:"


def test_a_dry_run_names_the_folder_its_bodies_are_in_last(tmp_path, capsys):
    write_csv(str(tmp_path / "in.csv"), ["time/usage_start", "cost/cost"], [["2024-08-01T00:00:00Z", "1.5"]])
    code, _, _ = run_cli(["--input", str(tmp_path / "in.csv"), "--connection_id", "c1", "--dry_run",
                          "--output_dir", str(tmp_path / "bodies"), f"--report_path={tmp_path}/r.json"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    last = printed.strip().splitlines()[-1]
    assert last.startswith(f"dry run, nothing sent: the bodies are in {tmp_path / 'bodies'}/ "), last
    assert os.path.exists(tmp_path / "bodies" / "c1" / "2024-08" / "00001.json")
