"""Beam metrics of a run: the counters and distributions the Dataflow UI shows."""
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
import apache_beam as beam

from anycost.inputs import files
from pipeline import graph
from anycost.config import RunConfig
from anycost_emulator import Emulator, FaultConfig
from tests.support import TEST_KEY, write_csv


def _metrics(result):
    found = {}
    query = result.metrics().query(MetricsFilter().with_namespace("cloudzero"))
    for counter in query["counters"]:
        found[counter.key.metric.name] = found.get(counter.key.metric.name, 0) + counter.committed
    for dist in query["distributions"]:
        found[dist.key.metric.name] = dist.committed
    return found


def test_counters_and_distributions(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDZERO_API_KEY", TEST_KEY)
    rows = [["c1", f"2024-08-01T{h:02d}:00:00Z", f"{h}.5", f"r{h}"] for h in range(24)]
    rows.append(["c1", "yesterday", "1", "r"])
    path = write_csv(str(tmp_path / "in.csv"), ["connection_id", "time/usage_start", "cost/cost", "resource/id"], rows)
    with Emulator(api_key=TEST_KEY, faults=FaultConfig(script=["5xx", "429"])) as emu:
        config = RunConfig(inputs=(path,), stream_column="connection_id", api_url=emu.url, max_body_bytes=1500,
                           max_rejected_rows=1, state_path=str(tmp_path / "state"))  # as every CLI run has
        p = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions(["--direct_running_mode=in_memory"]))
        graph.build(p, config, files.plan_splits([path], "connection_id"), str(tmp_path / "dead"),
                    str(tmp_path / "report.json"), log_report=False)
        result = p.run()
        result.wait_until_finish()
        bodies = emu.applied_drops
    found = _metrics(result)
    assert found["rows_read"] == 25 and found["rows_rejected"] == 1
    assert found["bodies_sent"] == bodies > 1 and found["retries"] == 2
    # one GET of the connection's drops (the month check), then the POSTs
    assert found["http_2xx"] == bodies + 1 and found["http_5xx"] == 1 and found["http_4xx"] == 1
    assert found["bytes_sent"] == found["body_bytes"].sum and found["body_bytes"].max <= 1500
    assert found["request_latency_ms"].count == bodies + 3
