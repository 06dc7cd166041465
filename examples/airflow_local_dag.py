"""An Airflow DAG you can run on a laptop: the connector on local files, against the local
AnyCost emulator, with the real ``BeamRunPythonPipelineOperator`` and the DirectRunner.

``upload_cbf`` runs ``pipeline/__main__.py`` with this repository's ``.venv/bin/python``
(no virtualenv is built per run); ``check_report`` then reads the run report and fails the
DAG run unless its ``ok`` field is true. It runs even when the upload failed, so its log
says why (the most frequent reasons rows were rejected, or that no report was written).

Try it (needs ``apache-airflow`` and ``apache-airflow-providers-apache-beam``; docs/operations.md,
"Airflow", and ``scripts/airflow_check.sh`` show a throw-away setup)::

    export CLOUDZERO_API_KEY=any-local-key            # the emulator and the pipeline share it
    .venv/bin/python -m anycost_emulator --port 8080 &
    airflow dags test cloudzero_anycost_local          # with AIRFLOW__CORE__DAGS_FOLDER=examples

Other files, another endpoint or another output folder::

    airflow dags test cloudzero_anycost_local -c '{"input": "/data/cbf/*.parquet", "api_url": "http://127.0.0.1:9000"}'

Environment: ``CLOUDZERO_PYTHON`` names another interpreter for the pipeline (it needs the
connector's dependencies; default: this repository's ``.venv/bin/python``).
"""
import datetime as dt
import json
import os
from pathlib import Path

try:  # Airflow 3
    from airflow.sdk import DAG, Param, task
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.decorators import task
    from airflow.models.param import Param

from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator

REPO = Path(__file__).resolve().parent.parent
PYTHON = os.environ.get("CLOUDZERO_PYTHON") or str(REPO / ".venv" / "bin" / "python")
# One folder per DAG run, under the chosen output folder.
RUN_FOLDER = "{{ params.output_folder }}/{{ dag.dag_id }}/{{ run_id | replace(':', '') | replace('+', '') }}"
REPORT_PATH = RUN_FOLDER + "/report.json"


@task(trigger_rule="all_done")
def check_report(report_path):
    """Fail the DAG run unless the connector's report says everything was delivered."""
    if not os.path.exists(report_path):
        raise RuntimeError(f"no report at {report_path}: the upload did not finish; see the upload_cbf log")
    with open(report_path) as handle:
        report = json.load(handle)
    print(json.dumps({key: report.get(key) for key in
                      ("ok", "rows_read", "rows_rejected", "bodies_sent", "bytes_sent", "blocked")}))
    for reason in report.get("reject_reasons") or []:
        print(f"rejected {reason['count']} x {reason['reason']}; e.g. {reason['example']}")
    if report.get("ok") is not True:
        raise RuntimeError(f"the CloudZero upload did not deliver everything; see {report_path}")


with DAG(
    dag_id="cloudzero_anycost_local",
    description="Upload local CBF files to the local AnyCost emulator with the Beam operator",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1),
    catchup=False,
    tags=["cloudzero", "local"],
    params={
        "input": Param(str(REPO / "examples" / "sample" / "*"), type="string"),
        "stream_column": Param("connection_id", type="string"),
        "api_url": Param("http://127.0.0.1:8080", type="string"),
        "output_folder": Param(str(REPO / "out" / "airflow"), type="string"),
    },
) as local_dag:
    upload = BeamRunPythonPipelineOperator(
        task_id="upload_cbf",
        runner="DirectRunner",
        py_file=str(REPO / "pipeline" / "__main__.py"),
        py_interpreter=PYTHON,  # used as it is: no py_requirements, so no virtualenv per run
        pipeline_options={
            "input": "{{ params.input }}",
            "stream_column": "{{ params.stream_column }}",
            "api_url": "{{ params.api_url }}",
            "report_path": REPORT_PATH,
            "dead_letter_path": RUN_FOLDER + "/rejected",
            # Stable across runs, so that a retried task resumes instead of sending again.
            "state_path": "{{ params.output_folder }}/state",
            # The operator adds airflow-version and passes each label as --labels=key=value.
            "labels": {"app": "cloudzero-anycost", "team": "finops"},
        },
    )
    upload >> check_report(REPORT_PATH)
