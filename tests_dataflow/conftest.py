"""Fixtures of the Dataflow dry-run tests: no network, Beam's temporary files in tmp_path,
a stand-in API key in the environment, and the command line's job kept for inspection."""
import socket
import tempfile

import pytest

try:
    from apache_beam.runners.dataflow.internal import apiclient  # noqa: F401  # only with apache-beam[gcp]
except ImportError as missing:
    raise ImportError("tests_dataflow/ needs the gcp extra: run ./scripts/dataflow_check.sh") from missing

from tests_dataflow.dry_run import API_KEY_STAND_IN  # noqa: E402

LOCAL_HOSTS = {None, "", "localhost", "127.0.0.1", "::1"}


class NetworkGuard:
    """Refuses, and records, every DNS lookup and connection to a host other than this one.

    In-process only (a subprocess, or gRPC's own C sockets, are not seen here):
    scripts/dataflow_check.sh also runs the tests in a namespace without a network.
    """

    def __init__(self):
        self.attempts = []

    def refuse(self, what):
        self.attempts.append(what)
        raise OSError(f"the Dataflow dry-run tests never use the network: {what}")

    def install(self, monkeypatch):
        real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

        def getaddrinfo(host, *args, **kwargs):
            if host not in LOCAL_HOSTS:
                self.refuse(f"DNS lookup of {host}")
            return real_getaddrinfo(host, *args, **kwargs)

        def connect(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOCAL_HOSTS:
                self.refuse(f"connection to {address}")
            return real_connect(sock, address)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(autouse=True)
def network_guard(monkeypatch, tmp_path):
    """Every test: no network (a test fails if anything even tried, though Beam may have
    swallowed the error), Beam's staging files in tmp_path, a stand-in key in the environment."""
    guard = NetworkGuard()
    guard.install(monkeypatch)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the sdist Beam builds to stage
    monkeypatch.setenv("CLOUDZERO_API_KEY", API_KEY_STAND_IN)
    yield guard
    assert not guard.attempts, f"the dry run reached for the network: {guard.attempts}"
