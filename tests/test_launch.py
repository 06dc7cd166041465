"""How the program launches: flags (unknown ones refused, hyphen forms, Beam's own options),
--help, where the outputs go, and as a Flex Template it submits and returns, never waits."""
import argparse
import json

import pytest
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState

from pipeline import main as cli
from tests.support import PINNED_RUNNER, TEST_KEY, run_cli, write_csv


class SubmitOnly(PipelineRunner):
    """Stands in for Dataflow: accepts the job and hands back a result nobody may wait on."""

    def __init__(self):
        self.submitted = []

    def run_pipeline(self, pipeline, options):
        self.submitted.append(pipeline)

        class Submitted(PipelineResult):
            def wait_until_finish(self, duration=None):
                raise AssertionError("a Flex Template launch must not wait for the job")

        return Submitted(PipelineState.RUNNING)


def test_a_flex_template_launch_submits_without_waiting(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FLEX_TEMPLATE_PYTHON_PY_FILE", "/template/pipeline/__main__.py")
    monkeypatch.setenv("CLOUDZERO_API_KEY", TEST_KEY)
    path = write_csv(str(tmp_path / "in.csv"), ["time/usage_start", "cost/cost"], [["2024-08-01T00:00:00Z", "1"]])
    runner = SubmitOnly()
    chosen = []
    monkeypatch.setattr(cli, "_runner", lambda name: chosen.append(name) or runner)
    code = cli.main(["--input", path, "--connection_id", "c1", "--temp_location", str(tmp_path / "tmp"),
                     "--labels=team=finops"])
    assert code == 0 and len(runner.submitted) == 1
    assert chosen == ["DataflowRunner"]  # no --runner given: as a template, never the local runner
    assert "job submitted" in capsys.readouterr().err


def test_no_wait_is_honoured_on_any_runner(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDZERO_API_KEY", TEST_KEY)
    path = write_csv(str(tmp_path / "in.csv"), ["time/usage_start", "cost/cost"], [["2024-08-01T00:00:00Z", "1"]])
    runner = SubmitOnly()
    monkeypatch.setattr(cli, "_runner", lambda name: runner)
    code = cli.main(["--input", path, "--connection_id", "c1", "--no-wait", f"--report_path={tmp_path}/r.json",
                     f"--dead_letter_path={tmp_path}/dead"])
    assert code == 0 and len(runner.submitted) == 1


# ---------------------------------------------------------------------------------------------
# No silent mistakes with flags
# ---------------------------------------------------------------------------------------------

HEADER = ["time/usage_start", "cost/cost"]


def one_row_input(tmp_path, rows=(["2024-08-01T00:00:00Z", "1.25"],)):
    return write_csv(str(tmp_path / "in.csv"), HEADER, list(rows))


@pytest.mark.parametrize("flag, suggestion", [
    (["--dryrun"], "--dry_run"),
    (["--dryrun=true"], "--dry_run"),
    (["--max_rejected_row", "5"], "--max_rejected_rows"),
    (["--direct_num_worker=2"], "--direct_num_workers"),  # a misspelt Beam option
    (["--direct_num_worker", "2"], "--direct_num_workers"),
    (["--temp-location=/tmp/x"], "--temp_location"),  # Beam's own options have no hyphen form
])
def test_an_unknown_flag_stops_the_run_naming_it_and_the_closest_flag(emulator, tmp_path, capsys, flag, suggestion):
    code, report, printed = run_cli(["--input", one_row_input(tmp_path), "--connection_id", "c1",
                                     f"--api_url={emulator.url}", f"--report_path={tmp_path}/r.json", *flag],
                                    capsys)
    assert code == 2 and report is None
    (line,) = printed.strip().splitlines()
    assert line.startswith(f"error: unknown flag {flag[0].split('=')[0]}; did you mean {suggestion}?")
    assert emulator.requests == [] and emulator.totals() == {}  # nothing uploaded


def test_the_key_is_never_a_flag_in_either_form():
    for flag in ("--api_key=k", "--api-key=k", "--apikey=k"):
        with pytest.raises(cli.UsageError, match="the API key is never a flag"):
            cli.parse(["--input=x.csv", "--connection_id=c1", flag])


def test_a_portable_runner_keeps_the_options_its_job_server_knows():
    _, beam_args, _ = cli.parse(["--input=x.csv", "--connection_id=c1", "--runner=FlinkRunner",
                                 "--flink_only_option=3"])
    assert beam_args == ["--runner=FlinkRunner", "--flink_only_option=3"]


def test_a_stray_argument_is_refused_with_the_quoting_hint(tmp_path, capsys):
    second = one_row_input(tmp_path)
    code, _, printed = run_cli(["--input", second, second, "--connection_id", "c1", "--dry_run",
                                f"--output_dir={tmp_path}/out"], capsys)
    assert code == 2
    assert f"unexpected argument {second!r}" in printed and "quote a glob" in printed


def test_hyphen_forms_of_the_connector_flags_work(emulator, tmp_path, capsys):
    out = tmp_path / "bodies"
    code, report, printed = run_cli(["--input", one_row_input(tmp_path), "--connection-id", "c1",
                                     "--dry-run", "--output-dir", str(out), f"--report_path={tmp_path}/r.json"],
                                    capsys)
    assert code == 0, printed
    assert report["mode"] == "dry_run" and len(list(out.rglob("*.json"))) == 1
    assert emulator.requests == []  # a dry run: nothing posted


def test_report_path_and_max_rejected_rows_in_hyphen_form_are_honoured(emulator, tmp_path, capsys):
    path = one_row_input(tmp_path, [["2024-08-01T00:00:00Z", "1.25"], ["2024-08-01T00:00:00Z", "oops"]])
    report_path = tmp_path / "chosen" / "report.json"
    code, _, printed = run_cli(["--input", path, "--connection_id", "c1", f"--api_url={emulator.url}",
                                "--report-path", str(report_path), "--max-rejected-rows", "5",
                                f"--dead-letter-path={tmp_path}/dead/rejected"], capsys)
    assert code == 0, printed
    report = json.loads(report_path.read_text())
    assert report["max_rejected_rows"] == 5 and report["rows_rejected"] == 1 and report["bodies_sent"] == 1
    assert [p.name for p in (tmp_path / "dead").iterdir()] == ["rejected-00000-of-00001.jsonl"]


def test_beam_options_and_airflow_labels_still_pass(emulator, tmp_path, capsys):
    code, report, printed = run_cli(["--input", one_row_input(tmp_path), "--connection_id", "c1",
                                     f"--api_url={emulator.url}", f"--report_path={tmp_path}/r.json",
                                     "--labels=a=b", "--labels", "airflow-version=v3-3-2",
                                     "--job_name=cloudzero-1", "--save_main_session", "--experiments=x"], capsys)
    assert code == 0, printed
    assert report["bodies_sent"] == 1 and "unknown flag" not in printed


def test_beam_options_keep_their_meaning():
    config, beam_args, _ = cli.parse(["--input=x.csv", "--connection_id=c1", "--labels=a=b", "--labels", "c=d",
                                      "--direct_num_workers", "2", "--dry-run=false"])
    from apache_beam.options.pipeline_options import DirectOptions, GoogleCloudOptions, PipelineOptions
    options = PipelineOptions(beam_args)
    assert options.view_as(GoogleCloudOptions).labels == ["a=b", "c=d"]
    assert options.view_as(DirectOptions).direct_num_workers == 2
    assert config.mode == "send"


def test_a_bad_value_for_a_beam_option_is_one_line(capsys):
    assert cli.main(["--input=x.csv", "--connection_id=c1", "--direct_num_workers=many"]) == 2
    assert capsys.readouterr().err.strip() == "error: argument --direct_num_workers: invalid int value: 'many'"


def test_help_shows_defaults_exit_statuses_and_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal width
    for expected in ("(default: https://api.cloudzero.com)", "(default: sum)", "(default: 5000000)",
                     "(default: 0)", "(default: false)", "(default: 8)", "(default: 90.0)",
                     "(default: ./cloudzero-runs/<run id>/report.json)", "--dry_run [true|false]",
                     "(default: ./cloudzero-runs/state/<API host_port>)",
                     "exit status:", "0 every body was accepted", "2 usage error", "3 the input cannot be planned",
                     "example: CLOUDZERO_API_KEY=... python -m pipeline --input", "--dry-run"):
        assert expected in text, expected
    for action in cli.build_parser()._actions:
        if action.option_strings and action.default not in (None, argparse.SUPPRESS):
            assert "default" in action.help, action.option_strings


# ---------------------------------------------------------------------------------------------
# Outputs where a person looks
# ---------------------------------------------------------------------------------------------

def run_here(args, folder, monkeypatch):
    monkeypatch.chdir(folder)
    return cli.main(list(args) + PINNED_RUNNER)


def test_by_default_the_report_and_rejected_rows_go_to_one_folder_per_run(emulator, tmp_path, monkeypatch, capsys):
    path = one_row_input(tmp_path, [["2024-08-01T00:00:00Z", "1.25"], ["2024-08-01T00:00:00Z", "oops"]])
    work = tmp_path / "work"
    work.mkdir()
    assert run_here(["--input", path, "--connection_id", "c1", f"--api_url={emulator.url}",
                     "--max_rejected_rows=1"], work, monkeypatch) == 0
    (run_folder,) = [p for p in (work / "cloudzero-runs").iterdir() if p.name != "state"]
    assert sorted(p.name for p in run_folder.iterdir()) == ["rejected-00000-of-00001.jsonl", "report.json"]
    report = json.loads((run_folder / "report.json").read_text())
    assert report["dead_letter_files"] == [str(run_folder / "rejected-00000-of-00001.jsonl")]
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"outputs: ./cloudzero-runs/{run_folder.name}/ (report.json, rejected-00000-of-00001.jsonl)"
    assert not list(tmp_path.glob("cloudzero-report-*"))
    # the default ledger, shared by every run from here to this API
    ledger = work / "cloudzero-runs" / "state" / f"127.0.0.1_{emulator.port}"
    assert report["state_path"] == str(ledger) and list(ledger.glob("c1/2024-08/*.json"))

    posts = emulator.post_count
    assert run_here(["--input", path, "--connection_id", "c1", f"--api_url={emulator.url}",
                     "--max_rejected_rows=1"], work, monkeypatch) == 0
    assert len(list((work / "cloudzero-runs").iterdir())) == 3  # a second run: a second folder, one ledger
    assert emulator.post_count == posts  # the rerun found the body in the ledger and sent nothing


def test_nothing_is_left_behind_where_nothing_was_written(emulator, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    report_path = tmp_path / "r.json"
    assert run_here(["--input", one_row_input(tmp_path), "--connection_id", "c1", f"--api_url={emulator.url}",
                     f"--report_path={report_path}", f"--state_path={tmp_path / 'state'}"], work, monkeypatch) == 0
    assert list(work.iterdir()) == []  # no rejects, report and ledger elsewhere: no empty run folder
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"report: {report_path}"
    assert run_here(["--input", str(tmp_path / "missing*.csv"), "--connection_id", "c1",
                     f"--api_url={emulator.url}"], work, monkeypatch) == 3
    assert run_here(["--input", one_row_input(tmp_path), "--connection_id", "c1", "--dryrun"],
                    work, monkeypatch) == 2
    assert list(work.iterdir()) == []


def test_a_real_process_ends_with_its_exit_code_and_every_output_written(tmp_path):
    """`python -m pipeline` skips the interpreter's teardown (`exit_at_once`): its stdout (a
    pipe, so block-buffered), the report and the ledger must all be complete all the same."""
    import os  # pylint: disable=import-outside-toplevel
    import pathlib  # pylint: disable=import-outside-toplevel
    import subprocess  # pylint: disable=import-outside-toplevel
    import sys  # pylint: disable=import-outside-toplevel
    from anycost_emulator import Emulator  # pylint: disable=import-outside-toplevel

    header = ["time/usage_start", "cost/cost"]
    good = write_csv(str(tmp_path / "good.csv"), header, [[f"2024-08-01T{h:02d}:00:00Z", f"{h}.5"] for h in range(24)])
    bad = write_csv(str(tmp_path / "bad.csv"), header, [["2024-08-01T00:00:00Z", "1"], ["not a time", "2"]])
    env = {**os.environ, "CLOUDZERO_API_KEY": TEST_KEY,
           "PYTHONPATH": str(pathlib.Path(__file__).resolve().parent.parent)}
    with Emulator(api_key=TEST_KEY) as emulator:
        for name, path, expected_code in (("good", good, 0), ("bad", bad, 1)):
            report = tmp_path / f"{name}-report.json"
            done = subprocess.run([sys.executable, "-m", "pipeline", "--input", path, "--connection_id", "c1",
                                   f"--api_url={emulator.url}", f"--state_path={tmp_path / name}",
                                   f"--report_path={report}", *PINNED_RUNNER],
                                  cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == expected_code, done.stdout + done.stderr
            assert f"report: {report}" in done.stdout.splitlines()[-1]  # the last line, flushed
            written = json.loads(report.read_text())
            assert written["rows_read"] == (24 if name == "good" else 2)
        assert emulator.applied_drops == 1  # the good file's one body; the bad file's was held back
        ledger = "".join(p.read_text() for p in (tmp_path / "good").rglob("*") if p.is_file())
        assert "delivered" in ledger
