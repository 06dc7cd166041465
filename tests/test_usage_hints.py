"""Usage mistakes a new user makes: each is refused (exit 2) in one line that says what to do."""
from tests.support import run_cli


def test_output_dir_without_dry_run_is_refused_and_nothing_is_sent(emulator, tmp_path, capsys):
    source = tmp_path / "a.csv"
    source.write_text("time/usage_start,cost/cost\n2024-08-01T00:00:00Z,1.25\n")
    code, _, printed = run_cli(["--input", str(source), "--connection_id", "c1",
                                "--api_url", emulator.url, "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 2, printed
    assert "--output_dir goes with --dry_run" in printed and len(printed.strip().splitlines()) == 1
    assert emulator.totals() == {}
