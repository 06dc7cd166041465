"""PlanDrops: the layout of every stream-month, from row lengths only, before anything is sent.

The chunks' rows stay on the sending branch; this branch carries only their lengths (and
hours), so checking the monthly limits and the replace operations' constraints for the
whole input costs a few bytes per row.
"""
import typing

import apache_beam as beam

from anycost.bodies import packing


def _without_rows(keyed_chunk):
    key, chunk = keyed_chunk
    return key, chunk._replace(rows=b"")


@beam.typehints.with_output_types(packing.StreamMonthPlan)
class _SummariseStreamMonth(beam.DoFn):
    """((connection_id, month), chunks without rows) -> the month's plan, without bodies."""

    def __init__(self, operation, max_body_bytes):
        self._operation = operation
        self._max_body_bytes = max_body_bytes

    def process(self, element):
        (connection_id, month), chunks = element
        yield packing.plan_stream_month(connection_id, month, chunks, self._operation,
                                        self._max_body_bytes, with_bodies=False)


class _PlanDrops(beam.PTransform):
    """Example: `summaries = chunks | _PlanDrops("sum", 5_000_000)`: one plan per stream-month."""

    def __init__(self, operation, max_body_bytes):
        super().__init__()
        self._operation = operation
        self._max_body_bytes = max_body_bytes

    def expand(self, chunks):
        return (chunks
                | "RowLengthsOnly" >> beam.Map(_without_rows).with_output_types(
                    typing.Tuple[typing.Tuple[str, str], typing.Any])
                | "GroupByStreamMonth" >> beam.GroupByKey()
                | "Summarise" >> beam.ParDo(_SummariseStreamMonth(self._operation, self._max_body_bytes)))
