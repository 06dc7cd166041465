"""The key from Secret Manager, end to end, and never in the pipeline that Beam serialises."""
import types

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from anycost.delivery import api_key
from anycost.inputs import files
from pipeline import graph
from anycost.config import RunConfig
from anycost_emulator import Emulator
from tests.support import TEST_KEY, run_cli, write_csv

SECRET = "projects/p/secrets/cloudzero/versions/3"


class FakeSecretClient:
    def __init__(self, store):
        self._store = store

    def access_secret_version(self, request):
        data = self._store[request["name"]].encode()
        return types.SimpleNamespace(payload=types.SimpleNamespace(data=data))


def _input(tmp_path):
    return write_csv(str(tmp_path / "in.csv"), ["time/usage_start", "cost/cost"],
                     [["2024-08-01T00:00:00Z", "1.25"], ["2024-08-02T00:00:00Z", "2"]])


def test_a_run_with_api_key_secret_reads_the_key_on_the_worker(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("CLOUDZERO_API_KEY", raising=False)
    monkeypatch.setattr(api_key, "secret_client_factory", lambda: FakeSecretClient({SECRET: TEST_KEY}))
    with Emulator(api_key=TEST_KEY) as emu:
        code, report, printed = run_cli(["--input", _input(tmp_path), "--connection_id", "c1",
                                         "--api_key_secret", SECRET, f"--api_url={emu.url}",
                                         f"--report_path={tmp_path}/report.json"], capsys)
        assert code == 0, printed
        assert emu.totals()["c1"]["2024-08"]["rows"] == 2
    assert TEST_KEY not in printed and TEST_KEY not in str(report)


def test_a_secret_that_cannot_be_read_fails_each_body_with_a_clear_message(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(api_key, "secret_client_factory", lambda: FakeSecretClient({}))
    with Emulator(api_key=TEST_KEY) as emu:
        code, report, printed = run_cli(["--input", _input(tmp_path), "--connection_id", "c1",
                                         "--api_key_secret", SECRET, f"--api_url={emu.url}",
                                         f"--report_path={tmp_path}/report.json"], capsys)
        assert code == 1 and emu.post_count == 0
    assert f"could not read {SECRET} from Secret Manager" in printed


def test_the_serialised_pipeline_and_options_never_hold_the_key(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDZERO_API_KEY", TEST_KEY)
    path = _input(tmp_path)
    options = PipelineOptions(["--labels=team=finops"])
    p = beam.Pipeline(options=options)
    graph.build(p, RunConfig(inputs=(path,), connection_id="c1"), files.plan_splits([path]),
                str(tmp_path / "dead"), str(tmp_path / "report.json"))
    proto = p.to_runner_api().SerializeToString()
    assert TEST_KEY.encode() not in proto
    assert TEST_KEY not in str(options.get_all_options())
