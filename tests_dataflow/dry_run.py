"""Build a Dataflow job offline and look at what would be submitted.

Beam's DataflowRunner, given its test option `dry_run` (TestOptions), does everything a
launch does up to the request to the Dataflow service: it validates the options, applies
Dataflow's overrides, translates the graph into the portable pipeline proto (pickling every
DoFn), checks it (`validate_pipeline_graph`), resolves the worker image and builds the
files to stage (the sdist of `--setup_file`), then returns instead of calling the service.
Staging (the upload to GCS) happens only in that call, so nothing leaves the machine;
`--no_auth` keeps Beam from looking for credentials.

The rest checks what the runner does not: that a fresh interpreter with only the installed
packages can unpickle the graph (`worker_check.py`), that the sdist holds every package of
the connector, and that a stand-in API key is nowhere in the job.
"""
import dataclasses
import json
import pathlib
import subprocess
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
from apache_beam.runners.runner import PipelineState

REPO = pathlib.Path(__file__).resolve().parent.parent
WORKER_CHECK = pathlib.Path(__file__).resolve().parent / "worker_check.py"
# A valid project id and bucket name: an invalid bucket makes Beam look for a default one on GCS.
GOOGLE_CLOUD = ["--project=test-project", "--region=europe-west1",
                "--temp_location=gs://cloudzero-test-bucket/tmp"]
API_KEY_STAND_IN = "cz-stand-in-key-that-must-never-travel-7d1e"
NOT_SHIPPED = {"tests", "tests_dataflow", "benchmarks"}  # repository packages that are not the product


class WorkerCheckFailed(AssertionError):
    """A fresh interpreter could not load the job as a worker would."""


@dataclasses.dataclass
class BuiltJob:
    """What DataflowRunner made of a pipeline in a dry run."""
    runner: DataflowRunner

    @property
    def proto(self):
        """The portable pipeline proto: what Dataflow (Runner v2) receives as the job graph."""
        return self.runner.proto_pipeline

    @property
    def job(self):
        """`apiclient.Job`: the request body's job (name, type, labels) and its options."""
        return self.runner.job

    @property
    def names(self):
        return {transform.unique_name for transform in self.proto.components.transforms.values()}

    @property
    def experiments(self):
        return set(self.job.options.view_as(DebugOptions).experiments or ())

    def urns(self):
        return {transform.spec.urn for transform in self.proto.components.transforms.values()}


def dataflow_options(*flags):
    """Options for a DataflowRunner dry run: Beam's `--dry_run=True` with `--no_auth`."""
    return PipelineOptions([*GOOGLE_CLOUD, "--no_auth", "--dry_run=True", *flags])


def build_job(build, *flags):
    """Run `build(p)` on a Dataflow pipeline in a dry run; the job it would submit."""
    runner = DataflowRunner()
    p = beam.Pipeline(runner=runner, options=dataflow_options(*flags))
    build(p)
    return finished(runner, p.run())


def finished(runner, result):
    """The dry run ends as a DONE result carrying the job; anything else is a failed check."""
    assert result.state == PipelineState.DONE, result.state
    assert result.job is runner.job
    return BuiltJob(runner)


def on_a_worker(job, folder, site=None):
    """The classes a fresh interpreter unpickles from the job, and whether the stand-in key
    was found anywhere in it (see worker_check.py). With `site`, the connector's packages
    come only from that folder, as installed from the staged sdist."""
    proto_file = pathlib.Path(folder) / "pipeline.pb"
    proto_file.write_bytes(job.proto.SerializeToString())
    command = [sys.executable, "-I", str(WORKER_CHECK), str(proto_file)] + ([str(site)] if site else [])
    done = subprocess.run(command, cwd=folder, input=API_KEY_STAND_IN, capture_output=True, text=True,
                          timeout=300, check=False)
    if done.returncode != 0:
        raise WorkerCheckFailed("a fresh interpreter cannot load the job:\n" + done.stderr[-3000:])
    return json.loads(done.stdout)


def install_like_a_worker(sdist, folder):
    """`pip install` of the staged sdist, as a Dataflow worker runs it at start-up, into a
    folder of its own; offline: no index, no build isolation, no dependencies (Beam and the
    rest are in the worker image)."""
    site = pathlib.Path(folder) / "worker-site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(site), str(sdist)],
                   check=True, capture_output=True, timeout=300)
    return site


def packages_in(folder):
    """Dotted names of the packages (folders with __init__.py) under `folder`."""
    folder = pathlib.Path(folder)
    return {".".join(init.relative_to(folder).parent.parts) for init in folder.rglob("__init__.py")}


def workers_load(job, folder):
    """What every job needs on the workers: the SDK it was built with, the connector's every
    package installed from the staged sdist, a graph those packages can unpickle, and no key
    anywhere. Returns the classes the workers unpickle."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert container_image(job).endswith(f"beam_python{version}_sdk:{beam.__version__}"), container_image(job)
    staged = staged_files(job)
    assert "workflow.tar.gz" in staged, staged  # the sdist of --setup_file
    site = install_like_a_worker(staged["workflow.tar.gz"], folder)
    assert repository_packages() <= packages_in(site), repository_packages() - packages_in(site)
    assert API_KEY_STAND_IN not in job_text(job)
    loaded = on_a_worker(job, folder, site)
    assert loaded["absent_text_found"] is False
    return set(loaded["classes"])


def _environment(job):
    (environment,) = job.proto.components.environments.values()
    return environment


def container_image(job):
    payload = beam_runner_api_pb2.DockerPayload.FromString(_environment(job).payload)
    return payload.container_image


def staged_files(job):
    """{name in the staging folder: local file} of what the launch would upload."""
    staged = {}
    for artifact in _environment(job).dependencies:
        path = beam_runner_api_pb2.ArtifactFilePayload.FromString(artifact.type_payload).path
        name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(artifact.role_payload).staged_name
        staged[name] = path
    return staged


def repository_packages():
    """Dotted names of the product's packages in this repository."""
    tops = [init.parent for init in REPO.glob("*/__init__.py") if init.parent.name not in NOT_SHIPPED]
    return {".".join(init.relative_to(REPO).parent.parts) for top in tops for init in top.rglob("__init__.py")}


def job_text(job):
    """The job request and every pipeline option, as text, to search for what must not be there."""
    return job.job.json() + json.dumps(job.job.options.get_all_options(), default=str)
