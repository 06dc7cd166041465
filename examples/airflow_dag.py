"""Airflow DAGs that upload Common Bill Format files to CloudZero AnyCost Stream on Dataflow.

Two ways to run the same connector:

* ``cloudzero_anycost_beam``: Airflow's ``BeamRunPythonPipelineOperator`` runs
  ``pipeline/__main__.py`` with the DataflowRunner. The repository (``setup.py``, ``pipeline/``,
  ``transforms/``) must be on the Airflow workers' disk; on Cloud Composer, copy it to
  ``gs://<composer-bucket>/data/cloudzero-anycost/``, which Composer mounts at
  ``/home/airflow/gcs/data/cloudzero-anycost``. ``--setup_file`` ships the package to the
  Dataflow workers.
* ``cloudzero_anycost_flex_template``: ``DataflowStartFlexTemplateOperator`` launches the Flex
  Template built from ``flex_template/`` (see docs/operations.md, "Flex Template"). Nothing but Airflow's Google
  provider is needed on the Airflow side.

Both read the API key on the Dataflow workers from Secret Manager (``api_key_secret``); the key is
never an Airflow variable, an operator argument or a pipeline option. Both end with a task that
reads the run report and fails when the run did not deliver everything, because a Dataflow job can
succeed while some bodies were refused by CloudZero.

Requirements on the Airflow side: ``apache-airflow-providers-apache-beam`` and
``apache-airflow-providers-google``. Edit the constants below for your project.
"""
import datetime as dt
import json

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.decorators import task

from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.providers.google.cloud.operators.dataflow import (
    DataflowConfiguration,
    DataflowStartFlexTemplateOperator,
)

PROJECT = "my-gcp-project"
REGION = "europe-west1"
BUCKET = "gs://my-dataflow-bucket"
TEMP_LOCATION = BUCKET + "/tmp"
# One connection for every row; use "stream_column" instead to take it from a column.
CONNECTION_ID = "my-anycost-connection"
# The Secret Manager *version* that holds the key; the workers' service account needs
# roles/secretmanager.secretAccessor on it.
API_KEY_SECRET = "projects/my-gcp-project/secrets/cloudzero-api-key/versions/latest"
WORKER_SERVICE_ACCOUNT = "cloudzero-dataflow@my-gcp-project.iam.gserviceaccount.com"
# Files of the run's month, e.g. gs://my-billing-bucket/cbf/2024-09/*.csv
INPUT = "gs://my-billing-bucket/cbf/{{ data_interval_start.strftime('%Y-%m') }}/*.csv"
# Where this DAG run's report goes; the check task reads it back.
RUN_FOLDER = BUCKET + "/cloudzero/runs/{{ dag.dag_id }}/{{ ts_nodash }}"
REPORT_PATH = RUN_FOLDER + "/report.json"
# Stable across runs, so that a retried or rerun task resumes instead of sending again.
STATE_PATH = BUCKET + "/cloudzero/state"

REPO_DIR = "/home/airflow/gcs/data/cloudzero-anycost"  # holds setup.py, pipeline/, transforms/
TEMPLATE_SPEC = BUCKET + "/templates/cloudzero-anycost.json"  # from gcloud dataflow flex-template build

LABELS = {"app": "cloudzero-anycost", "team": "finops"}

# Shared by both DAGs: one upload a day, retried once (with state_path, a retry resumes).
DAG_SETTINGS = dict(
    schedule="@daily",
    start_date=dt.datetime(2024, 1, 1),
    catchup=False,
    default_args={"retries": 1, "retry_delay": dt.timedelta(minutes=10)},
    tags=["cloudzero", "finops"],
)


@task
def check_report(report_path):
    """Fail the DAG run when the connector's report says not everything was delivered."""
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    bucket, _, name = report_path.removeprefix("gs://").partition("/")
    report = json.loads(GCSHook().download(bucket_name=bucket, object_name=name))
    print(json.dumps({key: report.get(key) for key in
                      ("ok", "rows_read", "rows_rejected", "bodies_sent", "bytes_sent")}))
    if not report.get("ok"):
        raise RuntimeError(f"the CloudZero upload did not deliver everything; see {report_path}")


with DAG(
    dag_id="cloudzero_anycost_beam",
    description="Upload CBF files to CloudZero AnyCost Stream with the Beam operator on Dataflow",
    **DAG_SETTINGS,
) as beam_dag:
    upload = BeamRunPythonPipelineOperator(
        task_id="upload_cbf",
        runner="DataflowRunner",
        py_file=REPO_DIR + "/pipeline/__main__.py",
        # A fresh virtualenv with the connector's dependencies (setup.py's install_requires
        # plus the gcp extra). Alternatively install the package into the Airflow image and
        # drop py_requirements.
        py_requirements=[
            "apache-beam[gcp]>=2.60",
            "google-cloud-secret-manager>=2.16",
            "pyarrow>=14",
            "requests>=2.31",
            "numpy>=1.24",
        ],
        py_interpreter="python3",
        py_system_site_packages=False,
        pipeline_options={
            "input": INPUT,
            "connection_id": CONNECTION_ID,
            "api_key_secret": API_KEY_SECRET,
            "operation": "sum",
            "state_path": STATE_PATH,
            "report_path": REPORT_PATH,
            "dead_letter_path": RUN_FOLDER + "/rejected",
            "temp_location": TEMP_LOCATION,
            "staging_location": BUCKET + "/staging",
            "setup_file": REPO_DIR + "/setup.py",
            "service_account_email": WORKER_SERVICE_ACCOUNT,
            # The operator adds airflow-version and passes each label as --labels=key=value;
            # the pipeline hands them to Beam untouched.
            "labels": LABELS,
            # Return once the job is submitted: the operator's Dataflow hook then follows the
            # job, and check_report reads the outcome.
            "no-wait": True,
        },
        dataflow_config=DataflowConfiguration(
            job_name="cloudzero-anycost",
            project_id=PROJECT,
            location=REGION,
            wait_until_finished=True,
        ),
    )
    upload >> check_report(REPORT_PATH)


with DAG(
    dag_id="cloudzero_anycost_flex_template",
    description="Upload CBF files to CloudZero AnyCost Stream with the connector's Flex Template",
    **DAG_SETTINGS,
) as flex_dag:
    launch = DataflowStartFlexTemplateOperator(
        task_id="upload_cbf",
        project_id=PROJECT,
        location=REGION,
        wait_until_finished=True,
        body={
            "launchParameter": {
                "jobName": "cloudzero-anycost",  # the operator appends a unique suffix
                "containerSpecGcsPath": TEMPLATE_SPEC,
                # Every value is a string; the names are those of flex_template/metadata.json.
                "parameters": {
                    "input": INPUT,
                    "connection_id": CONNECTION_ID,
                    "api_key_secret": API_KEY_SECRET,
                    "operation": "sum",
                    "state_path": STATE_PATH,
                    "report_path": REPORT_PATH,
                    "dead_letter_path": RUN_FOLDER + "/rejected",
                    # Boolean parameters are "true" or "false", e.g. "verify": "true".
                },
                "environment": {
                    "tempLocation": TEMP_LOCATION,
                    "serviceAccountEmail": WORKER_SERVICE_ACCOUNT,
                    "additionalUserLabels": LABELS,
                },
            }
        },
    )
    launch >> check_report(REPORT_PATH)
