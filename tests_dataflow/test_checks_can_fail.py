"""Each check of the Dataflow dry-run tests refuses what it is there to refuse."""
import operator
import socket

import apache_beam as beam
import pytest

from tests_dataflow.dry_run import (API_KEY_STAND_IN, WorkerCheckFailed, build_job, on_a_worker,
                                    packages_in, repository_packages)


class _HoldsAGenerator(beam.DoFn):
    def __init__(self):
        super().__init__()
        self.pending = (n for n in range(3))  # cannot be pickled

    def process(self, element):
        yield element


class _OnlyAtLaunch(beam.DoFn):
    """Importable here (tests_dataflow is on the launcher's path) but not installed on workers."""

    def process(self, element):
        yield element


def test_an_unpicklable_dofn_is_refused_while_the_job_is_built():
    with pytest.raises(RuntimeError, match="Unable to pickle fn"):
        build_job(lambda p: p | beam.Create([1]) | beam.ParDo(_HoldsAGenerator()))


def test_a_dofn_the_workers_cannot_import_passes_the_dry_run_but_not_the_worker_check(tmp_path):
    job = build_job(lambda p: p | beam.Create([1]) | "LaunchOnly" >> beam.ParDo(_OnlyAtLaunch()))
    assert "LaunchOnly" in job.names  # DataflowRunner itself accepts it

    with pytest.raises(WorkerCheckFailed, match="No module named 'tests_dataflow'"):
        on_a_worker(job, tmp_path)


def test_a_key_carried_in_the_graph_is_found(tmp_path):
    job = build_job(lambda p: p | beam.Create(["x"]) | beam.Map(operator.concat, API_KEY_STAND_IN))

    assert on_a_worker(job, tmp_path)["absent_text_found"] is True


def test_a_package_setup_py_leaves_out_is_noticed(tmp_path):
    site = tmp_path / "worker-site"
    for package in repository_packages() - {"anycost.bodies"}:
        folder = site.joinpath(*package.split("."))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").touch()

    assert repository_packages() - packages_in(site) == {"anycost.bodies"}


def test_the_network_guard_refuses_and_records_a_lookup_and_a_connection(network_guard):
    with pytest.raises(OSError, match="never use the network"):
        socket.getaddrinfo("dataflow.googleapis.com", 443)
    with socket.socket() as sock, pytest.raises(OSError, match="never use the network"):
        sock.connect(("192.0.2.1", 443))

    assert network_guard.attempts == ["DNS lookup of dataflow.googleapis.com", "connection to ('192.0.2.1', 443)"]
    network_guard.attempts.clear()  # seen; the fixture's own check would fail the test otherwise
