"""AggregateHourly in a pipeline: bounded on the in-memory runner, unbounded under TestStream."""
from decimal import Decimal

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window

from anycost.inputs import hourly
from transforms.aggregate import AggregateHourly

BOUNDED = PipelineOptions(["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"])
STREAMING = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
H0 = hourly.hour_seconds("2024-09-01T05:00:00Z")


def row(minute, cost, conn="c1", hour=5):
    return {"time/usage_start": f"2024-09-01T{hour:02d}:{minute:02d}:00Z", "cost/cost": cost, "conn": conn}


def merged(cost, conn="c1", hour=5):
    return {"time/usage_start": f"2024-09-01T{hour:02d}:00:00Z", "conn": conn, "cost/cost": Decimal(cost)}


def test_bounded_rows_merge_per_connection_and_hour_and_bad_rows_pass_through():
    bad = {"time/usage_start": "soon", "cost/cost": "1", "conn": "c1"}
    rows = [row(1, "0.1"), row(2, 0.2), row(3, Decimal("0.3")), row(1, "5", conn="c2"), row(1, "7", hour=6), bad]
    with beam.Pipeline(options=BOUNDED) as p:
        out = p | beam.Create(rows) | AggregateHourly()
        assert_that(out, equal_to([merged("0.6"), merged("5", "c2"), merged("7", hour=6), bad]))


def test_unbounded_late_rows_come_as_their_own_delta_and_too_late_rows_pass_through():
    stream = (test_stream.TestStream()
              .advance_watermark_to(H0)
              .add_elements([window.TimestampedValue(row(1, "1"), H0 + 60),
                             window.TimestampedValue(row(2, "2"), H0 + 120)])
              .advance_watermark_to(H0 + 3600 + 10)  # hour 05 closes: one row, 3
              .add_elements([window.TimestampedValue(row(3, "4"), H0 + 3600 + 20)])  # late, within lateness
              .advance_watermark_to(H0 + 3600 + 1000)
              .add_elements([window.TimestampedValue(row(4, "8"), H0 + 3600 + 1900)])  # beyond 1800 s
              .advance_watermark_to_infinity())
    with beam.Pipeline(options=STREAMING) as p:
        out = p | stream | AggregateHourly(allowed_lateness_seconds=1800)
        assert_that(out, equal_to([merged("3"), merged("4"), row(4, "8")]))
