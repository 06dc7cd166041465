"""`python -m pipeline` on Dataflow, batch and `--watch`, as `run_dataflow.sh` launches it
(and as the Flex Template launcher does), built offline by DataflowRunner's dry run.

The connector's own `--dry_run` flag (write bodies to --output_dir) shadows Beam's test option
of the same name: the command line takes `--dry_run` for itself, so Beam never sees it (the
first test shows that). So these tests pass the command line exactly what run_dataflow.sh
prints, and set Beam's option where the command line makes its PipelineOptions: the fixture
wraps `pipeline.main._pipeline_options` to add `TestOptions.dry_run = True`, programmatically,
and wraps `pipeline.main._runner` to keep the DataflowRunner so the test can read its job.
Everything else, from parsing and planning to building the graph and `p.run()`, is the
command line's own code. `--no_auth` is passed like any Beam option, and `--no-wait`
because there is no job to wait for (waiting would read the report back from GCS).
No flag or environment variable is added to the product for this.
"""
import os
import shlex
import subprocess

import pytest
from apache_beam.options import pipeline_options
from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner

from pipeline import main
from tests_dataflow.dry_run import GOOGLE_CLOUD, REPO, BuiltJob, workers_load

SECRET = "projects/test-project/secrets/cloudzero-api-key/versions/1"


@pytest.fixture
def dataflow_dry_run(monkeypatch):
    """The command line, unchanged, with Beam's test dry run switched on; returns the list
    that receives the DataflowRunner of each run."""
    real_options, real_runner = main._pipeline_options, main._runner
    runners = []

    def options_with_beam_dry_run(beam_args):
        options, runner_name = real_options(beam_args)
        options.view_as(pipeline_options.TestOptions).dry_run = True
        return options, runner_name

    def kept_runner(name):
        assert real_runner(name) == "DataflowRunner", "the command line chose another runner"
        runners.append(DataflowRunner())
        return runners[-1]

    monkeypatch.setattr(main, "_pipeline_options", options_with_beam_dry_run)
    monkeypatch.setattr(main, "_runner", kept_runner)
    monkeypatch.chdir(REPO)  # run_dataflow.sh runs from here: --setup_file ./setup.py
    return runners


@pytest.fixture
def bills(tmp_path):
    path = tmp_path / "bills" / "2024-09.csv"
    path.parent.mkdir()
    path.write_text("lineitem/type,resource/service,time/usage_start,cost/cost\n"
                    "Usage,Compute,2024-09-16T13:00:00Z,12.50\n"
                    "Usage,Storage,2024-09-17T08:00:00Z,0.0001\n")
    return path


def launch_command(input_pattern, *pipeline_args):
    """The arguments run_dataflow.sh passes to `python -m pipeline` (from its --print)."""
    env = {"PATH": os.environ["PATH"], "PYTHON": "python", "PROJECT": "test-project", "REGION": "europe-west1",
           "TEMP_LOCATION": "gs://cloudzero-test-bucket/tmp", "INPUT": str(input_pattern),
           "CONNECTION_ID": "billing-export", "API_KEY_SECRET": SECRET}
    printed = subprocess.run([str(REPO / "run_dataflow.sh"), "--print", "--", *pipeline_args], env=env,
                             capture_output=True, text=True, check=True).stdout
    command = shlex.split(printed)
    assert command[:3] == ["python", "-m", "pipeline"], command
    return command[3:]


def run_command_line(runners, args):
    code = main.main([*args, "--no_auth", "--no-wait"])
    assert code == 0
    (runner,) = runners
    return BuiltJob(runner)


def test_the_connectors_dry_run_flag_shadows_beams():
    """Why the fixture exists: `--dry_run=True` on the command line is the connector's mode."""
    config, beam_args, _ = main.parse(["--input", "x.csv", "--connection_id", "c", "--dry_run=True",
                                       "--output_dir", "out", *GOOGLE_CLOUD])
    assert config.mode == "dry_run"
    assert not any(arg.startswith("--dry_run") for arg in beam_args)


def test_batch_command_line_builds_a_dataflow_job(dataflow_dry_run, bills, tmp_path):
    job = run_command_line(dataflow_dry_run, launch_command(bills))

    assert job.job.proto.type_.name == "JOB_TYPE_BATCH"
    assert {"ReadCbf", "WriteToAnyCost", "WriteToAnyCost/Write", "WriteDeadLetter", "Report"} <= job.names
    assert job.job.options.get_all_options()["setup_file"] == "./setup.py"
    classes = workers_load(job, tmp_path)
    assert {"transforms.read._ReadSplit", "transforms.write._NormaliseRows", "transforms.sink._SendConnections",
            "pipeline.graph._TallyReads", "pipeline.rejects._WriteRejectParts"} <= classes


def test_watch_builds_a_streaming_dataflow_job(dataflow_dry_run, bills, tmp_path):
    args = launch_command(bills.parent / "*.csv", "--watch", "--poll_interval", "30")
    assert "--streaming" in args  # run_dataflow.sh adds it for --watch

    job = run_command_line(dataflow_dry_run, args)

    assert job.job.proto.type_.name == "JOB_TYPE_STREAMING"
    assert "enable_streaming_engine" in job.experiments
    assert {"Watch", "Watch/Poll"} <= job.names
    classes = workers_load(job, tmp_path)
    assert {"transforms.watch._DiscoverFiles", "transforms.watch._ReadFiles", "transforms.watch._NumberFiles",
            "transforms.watch._SendFiles"} <= classes


def test_a_flex_template_launch_builds_the_job_on_dataflow_and_does_not_wait(dataflow_dry_run, bills, monkeypatch):
    """The launcher image runs pipeline/__main__.py with the template's parameters and no
    --runner; the command line must pick Dataflow and return once the job is submitted."""
    monkeypatch.setenv("FLEX_TEMPLATE_PYTHON_PY_FILE", str(REPO / "pipeline" / "__main__.py"))
    code = main.main([f"--input={bills}", "--connection_id=billing-export", f"--api_key_secret={SECRET}",
                      *GOOGLE_CLOUD, f"--setup_file={REPO / 'setup.py'}", "--no_auth"])

    assert code == 0
    (runner,) = dataflow_dry_run
    assert {"ReadCbf", "WriteToAnyCost", "Report"} <= BuiltJob(runner).names
