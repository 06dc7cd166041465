"""A user's own pipelines with the public transforms, built as Dataflow jobs offline: files
through `ReadCbf | WriteToAnyCost`, and Pub/Sub through `AggregateHourly` into
`WriteToAnyCost(operation="replace_hourly")` as a streaming job."""
import json

import apache_beam as beam
import pytest

from tests_dataflow.dry_run import REPO, build_job, workers_load
from transforms import AggregateHourly, Operation, ReadCbf, WriteToAnyCost

BUCKET = "gs://cloudzero-test-bucket"
SHIP_THE_CONNECTOR = f"--setup_file={REPO / 'setup.py'}"  # one way a user gets it onto the workers


@pytest.fixture
def bills(tmp_path):
    folder = tmp_path / "bills"
    folder.mkdir()
    (folder / "2024-09.csv").write_text("lineitem/type,resource/service,time/usage_start,cost/cost\n"
                                        "Usage,Compute,2024-09-16T13:00:00Z,12.50\n")
    return folder


def test_read_cbf_into_write_to_anycost_builds_a_dataflow_job(bills, tmp_path):
    def users_pipeline(p):
        result = (p
                  | ReadCbf(str(bills / "*.csv"))
                  | WriteToAnyCost(connection_id="billing-export", state_path=f"{BUCKET}/state"))
        _ = result.rejected | "RejectedAsText" >> beam.Map(repr) | beam.io.WriteToText(f"{BUCKET}/rejected")

    job = build_job(users_pipeline, SHIP_THE_CONNECTOR)

    assert job.job.proto.type_.name == "JOB_TYPE_BATCH"
    assert {"ReadCbf", "WriteToAnyCost", "WriteToAnyCost/Write", "RejectedAsText"} <= job.names
    assert {"transforms.read._ReadSplit", "transforms.write._NormaliseRows",
            "transforms.sink._SendConnections"} <= workers_load(job, tmp_path)


def test_pubsub_aggregate_hourly_replace_hourly_builds_a_streaming_dataflow_job(tmp_path):
    def users_pipeline(p):
        (p
         | "ReadUsage" >> beam.io.ReadFromPubSub(subscription="projects/test-project/subscriptions/usage")
         | "Parse" >> beam.Map(json.loads)
         | AggregateHourly(allowed_lateness_seconds=7200)
         | WriteToAnyCost(stream_column="connection", operation=Operation.REPLACE_HOURLY,
                          allowed_lateness_seconds=7200, state_path=f"{BUCKET}/state"))

    job = build_job(users_pipeline, "--streaming", SHIP_THE_CONNECTOR)

    assert job.job.proto.type_.name == "JOB_TYPE_STREAMING"
    assert {"enable_streaming_engine", "use_runner_v2"} <= job.experiments
    assert "beam:transform:pubsub_read:v1" in job.urns()  # Dataflow's own Pub/Sub source
    assert {"AggregateHourly/KeyByHour", "AggregateHourly/HourWindows", "AggregateHourly/Merge",
            "WriteToAnyCost/Streaming"} <= job.names
    hours = [w for w in job.proto.components.windowing_strategies.values()
             if w.window_fn.urn == "beam:window_fn:fixed_windows:v1"]
    assert hours and all(w.allowed_lateness == 7_200_000 for w in hours)  # milliseconds
    assert {"transforms.aggregate._KeyByHour", "transforms.aggregate._MergeHourly",
            "transforms.streaming._SendPanes"} <= workers_load(job, tmp_path)
