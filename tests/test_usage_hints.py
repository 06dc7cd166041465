"""Usage mistakes a new user makes: each is refused (exit 2; 3 for a header the input cannot
be planned with) in a line that says what to do, never with a traceback."""
import pytest

from tests.support import run_cli


def test_output_dir_without_dry_run_is_refused_and_nothing_is_sent(emulator, tmp_path, capsys):
    source = tmp_path / "a.csv"
    source.write_text("time/usage_start,cost/cost\n2024-08-01T00:00:00Z,1.25\n")
    code, _, printed = run_cli(["--input", str(source), "--connection_id", "c1",
                                "--api_url", emulator.url, "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 2, printed
    assert "--output_dir goes with --dry_run" in printed and len(printed.strip().splitlines()) == 1
    assert emulator.totals() == {}


@pytest.mark.parametrize("header, says", [
    (" time/usage_start , cost/cost ", "column ' cost/cost ' has spaces around the required CBF column name "
                                       "'cost/cost' (leading or trailing whitespace); trim the spaces"),
    ("time/usage_start,Cost/Cost", "column 'Cost/Cost' is not a Common Bill Format column; did you mean "
                                   "'cost/cost'?"),
])
def test_a_near_miss_of_a_required_column_names_it_and_never_advises_dropping_it(tmp_path, capsys, header, says):
    source = tmp_path / "a.csv"
    source.write_text(f"{header}\n2024-08-01T00:00:00Z,1.25\n")
    code, _, printed = run_cli(["--input", str(source), "--connection_id", "c1", "--dry_run",
                                "--output_dir", str(tmp_path / "out")], capsys)
    assert code == 3, printed
    assert says in printed
    assert "--unknown_columns drop" not in printed and "is the header missing" not in printed
    assert "Traceback" not in printed


@pytest.mark.parametrize("flags, says", [
    (["--conection_id", "c1"], "unknown flag --conection_id; did you mean --connection_id?"),
    (["--conection_id=c1"], "unknown flag --conection_id; did you mean --connection_id?"),
])
def test_a_misspelt_runner_or_flag_is_refused_with_the_name_it_stands_for(tmp_path, capsys, flags, says):
    source = tmp_path / "a.csv"
    source.write_text("time/usage_start,cost/cost\n2024-08-01T00:00:00Z,1.25\n")
    code, _, printed = run_cli(["--input", str(source), *flags], capsys)
    assert code == 2, printed
    assert f"error: {says}" in printed and len(printed.strip().splitlines()) == 1, printed


def test_a_misspelt_runner_exits_2_with_the_runner_it_stands_for(tmp_path, capsys):
    from pipeline import main as cli  # not run_cli: it pins the runner
    source = tmp_path / "a.csv"
    source.write_text("time/usage_start,cost/cost\n2024-08-01T00:00:00Z,1.25\n")
    code = cli.main(["--input", str(source), "--connection_id", "c1", "--runner=DirectRuner",
                     f"--report_path={tmp_path}/r.json", f"--dead_letter_path={tmp_path}/dl"])
    printed = capsys.readouterr()
    assert code == 2 and printed.out == ""
    assert printed.err.startswith("error: --runner DirectRuner is not a Beam runner; did you mean DirectRunner?")
    assert len(printed.err.strip().splitlines()) == 1


@pytest.mark.parametrize("runner", ["direct", "DirectRunner", "dataflow", "FnApiRunner", "my.module.MyRunner"])
def test_the_runners_beam_knows_are_not_refused(runner):
    from pipeline import flags
    assert flags.runner_problem(runner) is None


def test_version_prints_the_packages_version_and_exits_0(tmp_path):
    import os
    import pathlib
    import subprocess
    import sys
    repo = pathlib.Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(repo)}
    packaged = subprocess.run([sys.executable, "setup.py", "--version"], cwd=repo, env=env, capture_output=True,
                              text=True, timeout=120)
    assert packaged.returncode == 0 and packaged.stdout.strip(), packaged.stderr
    shown = subprocess.run([sys.executable, "-m", "pipeline", "--version"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"python -m pipeline {packaged.stdout.strip().splitlines()[-1]}"
