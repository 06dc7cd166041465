"""Run in the Airflow virtualenv by scripts/airflow_check.sh: the Dataflow DAGs of
examples/airflow_dag.py import under real Airflow with the Google provider, and the Beam
operator's own conversion of its pipeline_options to flags gives a command line the
connector accepts (no virtualenv is built and nothing is launched on Google Cloud).

Usage: airflow-venv/bin/python scripts/airflow_dataflow_args.py PROJECT_PYTHON
"""
import json
import os
import subprocess
import sys
from pathlib import Path

try:  # Airflow 3
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 2
    from airflow.models.dagbag import DagBag
from airflow.providers.apache.beam.hooks import beam as beam_hooks

REPO = Path(__file__).resolve().parent.parent
PARSE = """
import json, sys
from pipeline import main
argv = json.load(sys.stdin)
config, beam_args, wait = main.parse(argv)
print(json.dumps({"api_key_secret": config.api_key_secret, "connection_id": config.connection_id,
                  "report_path": config.report_path, "wait": wait, "beam_args": beam_args}))
"""


class Captured(Exception):
    pass


def operator_command(operator, python):
    """The command the real operator would run, captured where the provider starts it."""
    commands = []

    def capture(cmd, *args, **kwargs):
        commands.append(cmd)
        raise Captured()

    beam_hooks.run_beam_command = capture
    operator.py_requirements = None  # use the project's interpreter instead of building a virtualenv
    operator.py_interpreter = python
    try:
        operator.execute(context={})
    except Captured:
        pass
    (command,) = commands
    return command


def main(python):
    # The operator makes its Dataflow hook before it runs anything: a connection without
    # credentials is enough, since nothing reaches Google Cloud.
    os.environ.setdefault("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", "google-cloud-platform://")
    bag = DagBag(dag_folder=str(REPO / "examples" / "airflow_dag.py"))
    assert not bag.import_errors, bag.import_errors
    assert {"cloudzero_anycost_beam", "cloudzero_anycost_flex_template"} <= set(bag.dag_ids), bag.dag_ids
    operator = bag.get_dag("cloudzero_anycost_beam").get_task("upload_cbf")
    command = operator_command(operator, python)
    assert command[:2] == [python, operator.py_file], command
    parsed = json.loads(subprocess.run([python, "-c", PARSE], input=json.dumps(command[2:]), text=True,
                                       capture_output=True, check=True, cwd=REPO).stdout)
    assert parsed["wait"] is False, parsed  # no-wait: the operator's Dataflow hook follows the job
    assert parsed["api_key_secret"].startswith("projects/") and parsed["connection_id"], parsed
    beam_args = parsed["beam_args"]
    for expected in ("--runner=DataflowRunner", "--labels=app=cloudzero-anycost", "--labels=team=finops"):
        assert expected in beam_args, (expected, beam_args)
    assert any(arg.startswith("--labels=airflow-version=v") for arg in beam_args), beam_args
    assert any(arg.startswith("--project=") for arg in beam_args), beam_args
    print("examples/airflow_dag.py: both DAGs import; the Beam operator's flags parse:",
          " ".join(arg for arg in beam_args if arg.startswith("--labels")))


if __name__ == "__main__":
    main(sys.argv[1])
