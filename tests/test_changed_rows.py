"""Issue 17.1: fixing a rejected row and rerunning must never add the good rows twice."""
from decimal import Decimal

import pytest

from anycost_emulator import Emulator
from tests.support import TEST_KEY, emulator_totals, run_cli, write_csv

HEADER = ["time/usage_start", "cost/cost", "resource/id"]


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("CLOUDZERO_API_KEY", TEST_KEY)


def _args(emu, path, tmp_path, *extra):
    return ["--input", path, "--connection_id", "c1", f"--api_url={emu.url}",
            "--state_path", str(tmp_path / "state"), f"--report_path={tmp_path}/report.json", *extra]


def test_a_fixed_row_rerun_is_refused_and_replace_drop_then_holds_exactly_the_file(key, tmp_path, capsys):
    path = str(tmp_path / "in" / "bill.csv")
    write_csv(path, HEADER, [["2024-08-01T00:00:00Z", "10.00", "a"], ["2024-08-02T00:00:00Z", "abc", "b"],
                             ["2024-08-03T00:00:00Z", "5.00", "c"]])
    with Emulator(api_key=TEST_KEY) as emu:
        code, _, printed = run_cli(_args(emu, path, tmp_path, "--max_rejected_rows", "1"), capsys)
        assert code == 0, printed
        assert emulator_totals(emu) == {"c1": {"2024-08": (2, Decimal("15.00"))}}

        write_csv(path, HEADER, [["2024-08-01T00:00:00Z", "10.00", "a"], ["2024-08-02T00:00:00Z", "2.50", "b"],
                                 ["2024-08-03T00:00:00Z", "5.00", "c"]])
        posts = emu.post_count
        code, report, printed = run_cli(_args(emu, path, tmp_path), capsys)
        assert code == 1
        assert emu.post_count == posts  # nothing of the month went out again
        assert "would add the earlier rows again" in printed and "--operation replace_drop" in printed
        assert "bill.csv" in printed
        assert emulator_totals(emu) == {"c1": {"2024-08": (2, Decimal("15.00"))}}

        code, _, printed = run_cli(_args(emu, path, tmp_path, "--operation", "replace_drop"), capsys)
        assert code == 0, printed
        assert emulator_totals(emu) == {"c1": {"2024-08": (3, Decimal("17.50"))}}


def test_a_new_file_for_a_month_already_sent_is_added(key, tmp_path, capsys):
    first = str(tmp_path / "in" / "day1.csv")
    second = str(tmp_path / "in2" / "day2.csv")
    write_csv(first, HEADER, [["2024-08-01T00:00:00Z", "10.00", "a"]])
    write_csv(second, HEADER, [["2024-08-02T00:00:00Z", "2.50", "b"]])
    with Emulator(api_key=TEST_KEY) as emu:
        assert run_cli(_args(emu, first, tmp_path), capsys)[0] == 0
        code, _, printed = run_cli(_args(emu, second, tmp_path), capsys)
        assert code == 0, printed
        assert emulator_totals(emu) == {"c1": {"2024-08": (2, Decimal("12.50"))}}
        # and the same first file again: already delivered, nothing added
        assert run_cli(_args(emu, first, tmp_path), capsys)[0] == 0
        assert emulator_totals(emu) == {"c1": {"2024-08": (2, Decimal("12.50"))}}


def test_a_month_no_earlier_sum_body_shares_files_with_is_decided_without_building_its_bodies():
    from anycost.delivery import changed_rows  # pylint: disable=import-outside-toplevel

    class Unbuilt:
        def __len__(self):
            return 2

        def __iter__(self):
            raise AssertionError("the bodies were built")

    delivered = [{"month": "2024-08", "operation": "sum", "identity": "k1", "files": ["other.csv"]},
                 {"month": "2024-07", "operation": "sum", "identity": "k2", "files": ["a.csv"]}]
    assert changed_rows.refusal("2024-08", Unbuilt(), ["a.csv"], delivered, "cli") is None
