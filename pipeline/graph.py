"""The Beam graph: read -> validate -> plan -> (gate) -> group by connection -> send -> report.

    splits --ReadCbf--> chunks --------------------------WriteBillingDrops--> results
              |           |  (row lengths only)             ^ gate (side input): nothing is
              |           +--PlanDrops--> summaries --------+ sent until the whole input is
              |  stats -------------------------------------+ validated and planned
              |  rejects -> dead-letter JSON Lines
              +--> report (JSON at report_path, table in the log)

The rows themselves are shuffled once, by connection; the per-month plan that the gate
and the report need travels on a branch that carries only row lengths.
"""
import json
import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from anycost import report as run_report
from transforms.plan import PlanDrops
from transforms.read import FILE_ERRORS, REJECTS, RULES, STATS, ReadCbf, SumCounts, SumTuples
from transforms.reasons import CountRejectReasons
from transforms.sink import WriteBillingDrops

LOG = logging.getLogger("cloudzero")


def write_report(_, config, report_target, log_report, stats, summaries, results, dead_letters, file_errors,
                 input_rules=None, reasons=()):
    bodies = [r for r in results if not isinstance(r, dict)]
    verifications = [r for r in results if isinstance(r, dict)]
    report = run_report.build(config, stats, summaries, bodies, dead_letters, file_errors, verifications,
                              input_rules, reject_reasons=reasons)
    with FileSystems.create(report_target) as handle:
        handle.write(json.dumps(report, indent=2, sort_keys=False).encode())
    if log_report:  # on Dataflow, the workers' log is where the summary shows up
        LOG.info("%s", run_report.render(report))
    return report_target


def build(p, config, splits, dead_letter_prefix, report_target, log_report=True):
    """Add the whole connector to pipeline `p`; returns the report path's PCollection."""
    read = p | "ReadCbf" >> ReadCbf(splits, config.normalise_settings())

    dead_letters = (read[REJECTS]
                    | "WriteDeadLetter" >> beam.io.WriteToText(
                        dead_letter_prefix, file_name_suffix=".jsonl", skip_if_empty=True))
    stats = read[STATS] | "CountRows" >> beam.CombineGlobally(SumTuples(3))
    input_rules = read[RULES] | "CountInputRules" >> beam.CombineGlobally(SumCounts())
    reasons = read[REJECTS] | "CountRejectReasons" >> CountRejectReasons()

    summaries = read["chunks"] | "PlanDrops" >> PlanDrops(config.operation, config.max_body_bytes)
    gate = (p
            | "GateSeed" >> beam.Create([None])
            | "Gate" >> beam.Map(lambda _, s, m: run_report.gate_reason(s, m, config),
                                 beam.pvalue.AsSingleton(stats), beam.pvalue.AsList(summaries)))
    results = read["chunks"] | "WriteBillingDrops" >> WriteBillingDrops(config, gate)

    return (p
            | "ReportSeed" >> beam.Create([None])
            | "Report" >> beam.Map(write_report, config, report_target, log_report,
                                   beam.pvalue.AsSingleton(stats), beam.pvalue.AsList(summaries),
                                   beam.pvalue.AsList(results), beam.pvalue.AsList(dead_letters),
                                   beam.pvalue.AsList(read[FILE_ERRORS]),
                                   beam.pvalue.AsSingleton(input_rules), beam.pvalue.AsSingleton(reasons)))
