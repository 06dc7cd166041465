"""Validate, verify, test namespaces and the replace operations, against the emulator."""
import json

import pytest

from anycost_emulator import Emulator
from tests.support import TEST_KEY, emulator_totals, expected_totals, run_cli, write_csv

HEADER = ["connection_id", "time/usage_start", "cost/cost", "resource/id"]


@pytest.fixture
def emu(monkeypatch):
    monkeypatch.setenv("CLOUDZERO_API_KEY", TEST_KEY)
    with Emulator(api_key=TEST_KEY) as emulator:
        yield emulator


def _input(tmp_path, hours=30, rows_per_hour=12, connections=("a", "b")):
    rows, expected = [], []
    for conn in connections:
        for hour in range(hours):
            for i in range(rows_per_hour):
                month = "2024-05" if hour % 2 else "2024-06"
                cost = f"{hour}.{i:02d}"
                rows.append([conn, f"{month}-{1 + hour // 24:02d}T{hour % 24:02d}:{i:02d}:00Z", cost, f"r{hour}-{i}"])
                expected.append((conn, month, cost))
    return write_csv(str(tmp_path / "in" / "x.csv"), HEADER, rows), expected_totals(expected)


def _args(emu, path, tmp_path, *extra):
    return ["--input", path, "--stream_column", "connection_id", f"--api_url={emu.url}",
            f"--report_path={tmp_path}/report.json", *extra]


def test_validate_only_posts_no_drop_and_reports_each_body(emu, tmp_path, capsys):
    path, _ = _input(tmp_path)
    code, report, printed = run_cli(_args(emu, path, tmp_path, "--validate_only", "--max_body_bytes", "3000"), capsys)
    assert code == 0, printed
    assert emu.post_count == 0 and emu.totals() == {}
    validated = [r for r in emu.requests if r.path.endswith("/validate_billing_drop")]
    assert len(validated) == report["bodies_planned"] > 4
    assert all(entry["status"] == "valid" for months in report["streams"].values() for entry in months.values())


def test_verify_after_upload_matches(emu, tmp_path, capsys):
    path, expected = _input(tmp_path)
    code, report, printed = run_cli(_args(emu, path, tmp_path, "--verify"), capsys)
    assert code == 0, printed
    for conn, months in expected.items():
        for month, (rows, cost) in months.items():
            check = report["streams"][conn][month]["verify"]
            assert check["status"] == "match" and check["actual_rows"] == rows
            assert report["streams"][conn][month]["status"] == "verified"


def test_verify_only_against_an_empty_emulator_names_each_missing_month(emu, tmp_path, capsys):
    path, expected = _input(tmp_path)
    code, report, printed = run_cli(_args(emu, path, tmp_path, "--verify_only"), capsys)
    assert code == 1
    assert emu.post_count == 0
    for conn, months in expected.items():
        for month in months:
            assert report["streams"][conn][month]["verify"]["status"] == "missing"
            assert f"CloudZero holds nothing for {month}" in printed


def test_verify_only_finds_a_difference(emu, tmp_path, capsys):
    path, _ = _input(tmp_path, connections=("a",))
    assert run_cli(_args(emu, path, tmp_path), capsys)[0] == 0
    assert run_cli(_args(emu, path, tmp_path, "--verify_only"), capsys)[0] == 0
    emu.forget_idempotency_keys()  # else the same keys replay, and nothing is added
    code, report, printed = run_cli(_args(emu, path, tmp_path), capsys)  # sum twice: doubled
    code, report, printed = run_cli(_args(emu, path, tmp_path, "--verify_only"), capsys)
    assert code == 1
    check = report["streams"]["a"]["2024-05"]["verify"]
    assert check["status"] == "mismatch" and check["actual_rows"] == 2 * check["expected_rows"]


def test_test_namespace_leaves_production_untouched(emu, tmp_path, capsys):
    path, expected = _input(tmp_path)
    code, _, printed = run_cli(_args(emu, path, tmp_path, "--test_namespace", "try-1"), capsys)
    assert code == 0, printed
    assert emu.totals() == {}
    got = {c: {m: (t["rows"], t["cost"]) for m, t in ms.items()} for c, ms in emu.totals(namespace="try-1").items()}
    assert got == expected


@pytest.mark.parametrize("operation, extra", [("replace_hourly", ["--max_body_bytes", "4000"]),
                                              ("replace_drop", [])])
def test_replace_operations_are_idempotent_by_construction(emu, tmp_path, capsys, operation, extra):
    path, expected = _input(tmp_path)
    for _ in range(2):
        code, report, printed = run_cli(_args(emu, path, tmp_path, "--operation", operation, *extra), capsys)
        assert code == 0, printed
        assert emulator_totals(emu) == expected
    if operation == "replace_hourly":
        assert report["bodies_sent"] > 4
        bodies = [r for r in emu.requests if r.path.endswith("/billing_drops") and r.status == 200]
        assert all(r.body_bytes <= 4000 for r in bodies)


def test_replace_hourly_cuts_bodies_only_at_hour_boundaries(emu, tmp_path, capsys):
    path, _ = _input(tmp_path, connections=("a",))
    out = tmp_path / "bodies"
    code, _, printed = run_cli(_args(emu, path, tmp_path, "--operation", "replace_hourly", "--max_body_bytes", "3000",
                                     "--dry_run", "--output_dir", str(out)), capsys)
    assert code == 0, printed
    seen = {}
    for body_file in sorted(out.glob("a/*/*.json")):
        hours = {row["time/usage_start"][:13] for row in json.loads(body_file.read_text())["data"]}
        for hour in hours:
            assert hour not in seen, f"hour {hour} split across {seen.get(hour)} and {body_file.name}"
            seen[hour] = body_file.name
    assert len(seen) == 30


def test_replace_hourly_refuses_an_hour_that_cannot_fit(emu, tmp_path, capsys):
    path, _ = _input(tmp_path, rows_per_hour=60)
    code, report, printed = run_cli(_args(emu, path, tmp_path, "--operation", "replace_hourly",
                                          "--max_body_bytes", "2000"), capsys)
    assert code == 1 and emu.post_count == 0
    assert "one UTC hour" in printed and "NOTHING POSTED" in printed


def test_replace_drop_refuses_a_month_that_needs_two_bodies(emu, tmp_path, capsys):
    path, _ = _input(tmp_path)
    code, report, printed = run_cli(_args(emu, path, tmp_path, "--operation", "replace_drop",
                                          "--max_body_bytes", "5000"), capsys)
    assert code == 1 and emu.post_count == 0
    assert "must fit in one body" in printed and report["blocked"]
