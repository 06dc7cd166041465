"""PlanDrops: a stream-month's chunks, after the shuffle, become ordered bodies."""
import typing

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline import packing

SUMMARIES = "summaries"


def summary_of(plan: packing.StreamMonthPlan):
    """The plan without its bodies: small enough to be a side input and a report line."""
    return packing.StreamMonthPlan(plan.connection_id, plan.month, plan.row_count, plan.row_bytes,
                                   plan.cost_total, [], plan.refused)


@beam.typehints.with_output_types(typing.Tuple[str, typing.Any])
class PlanStreamMonth(beam.DoFn):
    """((connection_id, month), chunks) -> (connection_id, PlannedBody) for each body, and
    (connection_id, summary) for the month, all keyed by connection alone for the sink."""

    def __init__(self, operation, max_body_bytes):
        self._operation = operation
        self._max_body_bytes = max_body_bytes
        self._body_bytes = Metrics.distribution("cloudzero", "body_bytes")

    def process(self, element):
        (connection_id, month), chunks = element
        plan = packing.plan_stream_month(connection_id, month, chunks, self._operation, self._max_body_bytes)
        summary = summary_of(plan)
        yield beam.pvalue.TaggedOutput(SUMMARIES, summary)
        yield connection_id, summary
        for body in plan.bodies:
            self._body_bytes.update(body.byte_count)
            yield connection_id, body


class PlanDrops(beam.PTransform):
    """Example: `keyed = chunks | PlanDrops("sum", 5_000_000)`; `keyed.summaries` has one per month."""

    def __init__(self, operation, max_body_bytes):
        super().__init__()
        self._operation = operation
        self._max_body_bytes = max_body_bytes

    def expand(self, chunks):
        return (chunks
                | "GroupByStreamMonth" >> beam.GroupByKey()
                | "Pack" >> beam.ParDo(PlanStreamMonth(self._operation, self._max_body_bytes)).with_outputs(
                    SUMMARIES, main="keyed"))
