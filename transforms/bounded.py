"""WriteBounded: the write path for bounded input, shared by `WriteToAnyCost` and the command line.

    chunks --_PlanDrops (row lengths only)--> summaries --+
    rejected-row counts ---------------------------------+--> gate (one reason or None)
    holds (the caller's reasons, e.g. broken files) -----+      |
    chunks --_WriteBillingDrops (grouped by connection) <--------+ side input --> results

Nothing is posted before the whole input is validated and planned: the sender waits for the
gate, a singleton side input computed from every rejected row and every stream-month plan.
"""
import logging
import typing

import apache_beam as beam

from anycost import config as run_config
from anycost.outcomes import report
from transforms.plan import _PlanDrops
from transforms.sink import _WriteBillingDrops


LOG = logging.getLogger("cloudzero")


def _held_back(_, rejected_counts, plans, holds, settings):
    """The gate's reason to post nothing, or None; a hold is logged, once per run, because a
    pipeline whose every body is held back still ends normally and posts nothing."""
    reason = report.hold_reason(sum(rejected_counts), plans, settings, holds)
    if reason:
        who = "WriteToAnyCost" if settings.face == run_config.API else "the run"
        LOG.warning("%s held back every body: %s", who, reason)
    return reason


class _WriteBoundedResult(typing.NamedTuple):
    results: beam.PCollection  # delivery.BodyResult per body (+ verification dicts when verifying)
    summaries: beam.PCollection  # packing.StreamMonthPlan per stream-month, without bodies


class _WriteBounded(beam.PTransform):
    """Example::

        written = {"chunks": chunks, "rejected_counts": counts, "holds": reasons} | _WriteBounded(settings)

    Inputs (a dict of PCollections): `chunks`, ((connection_id, month), Chunk) from
    `anycost.inputs.normalise`; `rejected_counts`, a few ints that sum to the rows rejected;
    optionally `holds`, reason strings: any reason holds every POST back, and the bodies
    are reported `not_sent` with it. `settings` is an `anycost.config.WriteSettings`.
    Returns a `_WriteBoundedResult`.
    """

    def __init__(self, settings):
        super().__init__()
        self._settings = settings

    def expand(self, inputs):
        settings = self._settings
        chunks = inputs["chunks"]
        holds = inputs.get("holds")
        if holds is None:
            holds = chunks.pipeline | "NoHolds" >> beam.Create([]).with_output_types(str)
        summaries = chunks | "PlanDrops" >> _PlanDrops(settings.operation, settings.max_body_bytes)
        gate = (chunks.pipeline
                | "GateSeed" >> beam.Create([None])
                | "Gate" >> beam.Map(_held_back, beam.pvalue.AsList(inputs["rejected_counts"]),
                                     beam.pvalue.AsList(summaries), beam.pvalue.AsList(holds), settings))
        results = chunks | "WriteBillingDrops" >> _WriteBillingDrops(settings, gate, summaries)
        return _WriteBoundedResult(results, summaries)
