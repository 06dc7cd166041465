"""WriteBounded: the write path for bounded input, shared by `WriteToAnyCost` and the command line.

    chunks --_PlanDrops (row lengths only)--> summaries ---+
    tallies (rows rejected, files broken, per bundle) -----+--> gate (one reason or None)
                                                                   |
    chunks --_WriteBillingDrops (grouped by connection) <-----------+ side input --> results

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


def _held_back(_, tallies, plans, settings):
    """The gate's reason to post nothing, or None; a hold is logged, once per run, because a
    pipeline whose every body is held back still ends normally and posts nothing."""
    reason = report.gate_reason(sum(tally.rejected for tally in tallies), sum(tally.file_errors for tally in tallies),
                                plans, settings)
    if reason:
        who = "WriteToAnyCost" if settings.face == run_config.API else "the run"
        LOG.warning("%s held back every body: %s", who, reason)
    return reason


class _WriteBoundedResult(typing.NamedTuple):
    results: beam.PCollection  # delivery.BodyResult per body (+ verification dicts when verifying)
    summaries: beam.PCollection  # packing.StreamMonthPlan per stream-month, without bodies


class _WriteBounded(beam.PTransform):
    """Example::

        written = {"chunks": chunks, "tallies": tallies} | _WriteBounded(settings)

    Inputs (a dict of PCollections): `chunks`, ((connection_id, month), Chunk) from
    `anycost.inputs.normalise`; `tallies`, a few `report.BundleTally`s that sum to the rows
    rejected and the files that broke part-way (any such file holds every POST back, and
    the bodies are reported `not_sent`). `settings` is an `anycost.config.WriteSettings`.
    Returns a `_WriteBoundedResult`.
    """

    def __init__(self, settings):
        super().__init__()
        self._settings = settings

    def expand(self, inputs):
        settings = self._settings
        chunks = inputs["chunks"]
        summaries = chunks | "PlanDrops" >> _PlanDrops(settings.operation, settings.max_body_bytes)
        gate = (chunks.pipeline
                | "GateSeed" >> beam.Create([None])
                | "Gate" >> beam.Map(_held_back, beam.pvalue.AsList(inputs["tallies"]),
                                     beam.pvalue.AsList(summaries), settings))
        results = chunks | "WriteBillingDrops" >> _WriteBillingDrops(settings, gate, summaries)
        return _WriteBoundedResult(results, summaries)
