"""How the program launches a job: as a Flex Template it submits and returns, never waits."""
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState

from pipeline import main as cli
from tests.support import TEST_KEY, write_csv


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
