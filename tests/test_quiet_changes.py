"""Input CloudZero would change without saying so: a resource/id with more than two parts.

CloudZero splits `resource/id` on `/` or `:` into a type and a name and drops the rest. Such
rows are sent (not rejected), counted per stream-month, and named with an example, from the
batch through the month's plan to the report.
"""
import numpy as np
import pyarrow as pa

from anycost.outcomes import report
from anycost.config import RunConfig
from anycost.inputs.normalise import SourceBatch, normalise_batch
from anycost.bodies.packing import plan_stream_month
from anycost.config import RowSettings
from anycost.outcomes.notices import resource_id_notice

START, COST, RID = "time/usage_start", "cost/cost", "resource/id"


def _batch(rows, stream_column=None):
    columns = list(dict.fromkeys(k for row in rows for k in row))
    batch = pa.RecordBatch.from_arrays([pa.array([r.get(c) for r in rows], pa.string()) for c in columns],
                                       names=columns)
    settings = RowSettings(connection_id=None if stream_column else "c1", stream_column=stream_column)
    return normalise_batch(batch, SourceBatch("in.csv", (0, 0, 0), np.arange(1, len(rows) + 1)), settings)


def test_resource_ids_with_more_than_two_parts_are_counted_per_stream_month_not_rejected():
    rows = [
        {"conn": "a", START: "2024-08-01T00:00:00Z", COST: "1", RID: "arn:aws:ec2:us-east-1:1:instance/i-1"},
        {"conn": "a", START: "2024-08-01T01:00:00Z", COST: "1", RID: "i-123"},  # one part: kept whole
        {"conn": "a", START: "2024-08-01T02:00:00Z", COST: "1", RID: "instance/i-123"},  # two parts: kept
        {"conn": "a", START: "2024-08-01T03:00:00Z", COST: "1", RID: "vm/east:web-1"},
        {"conn": "b", START: "2024-08-01T03:00:00Z", COST: "1", RID: "a/b/c"},
        {"conn": "a", START: "2024-09-01T03:00:00Z", COST: "1"},  # no resource/id at all
        {"conn": "a", START: "garbage", COST: "1", RID: "x/y/z"},  # rejected: not counted
    ]
    result = _batch(rows, stream_column="conn")
    assert len(result.rejects) == 1
    found = {key: (chunk.resource_ids_cut, chunk.resource_id_example, chunk.row_count) for key, chunk in result.chunks}
    assert found == {("a", "2024-08"): (2, "arn:aws:ec2:us-east-1:1:instance/i-1", 4),
                     ("b", "2024-08"): (1, "a/b/c", 1), ("a", "2024-09"): (0, "", 1)}
    # The rows go out as they are: CloudZero, not the connector, does the cutting.
    assert b"arn:aws:ec2:us-east-1:1:instance/i-1" in result.chunks[0][1].json_rows()


def test_the_months_plan_sums_its_chunks_and_keeps_the_first_example():
    first = _batch([{START: "2024-08-01T00:00:00Z", COST: "1", RID: "p:q:r"}]).chunks[0][1]
    second = _batch([{START: "2024-08-02T00:00:00Z", COST: "1", RID: "s/t/u"},
                     {START: "2024-08-02T00:00:00Z", COST: "1", RID: "s/t/v"}]).chunks[0][1]
    second = second._replace(order=(1, 0, 0, 0))
    plan = plan_stream_month("c1", "2024-08", [second, first], "sum", 5_000_000)
    assert (plan.resource_ids_cut, plan.resource_id_example) == (3, "p:q:r")
    assert plan_stream_month("c1", "2024-08", [second, first], "sum", 5_000_000,
                             with_bodies=False).resource_ids_cut == 3


def test_the_report_names_what_cloudzero_keeps():
    assert resource_id_notice(3, "arn:aws:ec2:us-east-1:1:instance/i-1") == (
        "3 row(s) have a resource/id with more than two parts separated by / or :, e.g. "
        "'arn:aws:ec2:us-east-1:1:instance/i-1'; CloudZero keeps the type 'arn' and the name 'aws' "
        "and drops the rest")
    chunk = _batch([{START: "2024-08-01T00:00:00Z", COST: "1", RID: "vm/east:web-1"}]).chunks[0][1]
    plan = plan_stream_month("c1", "2024-08", [chunk], "sum", 5_000_000, with_bodies=False)
    built = report.build(RunConfig(inputs=("in.csv",), connection_id="c1"), (1, 0, 0), [plan], [])
    entry = built["streams"]["c1"]["2024-08"]["resource_ids_cut"]
    assert entry["rows"] == 1 and entry["example"] == "vm/east:web-1"
    assert "keeps the type 'vm' and the name 'east'" in entry["message"]
    assert "note: 1 row(s) have a resource/id" in report.render(built)
