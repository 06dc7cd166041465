"""The Beam graph of the command line: ReadCbf feeding the same write path as WriteToAnyCost.

    splits --ReadCbf--> chunks ----------------------------WriteBounded--> results
              |  stats --> rejected-row count -----------------^   (PlanDrops, gate, send:
              |        --> a hold reason when files broke -----^    transforms/bounded.py)
              |  rejects -> dead-letter JSON Lines                        |
              +--> report (JSON at report_path, table in the log) <-------+ results, summaries

The rows themselves are shuffled once, by connection; the per-month plan that the gate
and the report need travels on a branch that carries only row lengths.
"""
import json
import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from anycost.outcomes import report as run_report
from transforms.bounded import WriteBounded
from transforms.read import FILE_ERRORS, REJECTS, RULES, STATS, ReadCbf, SumCounts, SumTuples
from transforms.reasons import CountRejectReasons

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


def file_error_holds(count):
    """A file that broke part-way holds every POST back: its rows are incomplete."""
    return [run_report.file_error_hold(count)] if count else []


def build(p, config, splits, dead_letter_prefix, report_target, log_report=True):
    """Add the whole connector to pipeline `p`; returns the report path's PCollection."""
    settings = config.write_settings()
    read = p | "ReadCbf" >> ReadCbf(splits, config.normalise_settings())

    dead_letters = (read[REJECTS]
                    | "WriteDeadLetter" >> beam.io.WriteToText(
                        dead_letter_prefix, file_name_suffix=".jsonl", skip_if_empty=True))
    stats = read[STATS] | "CountRows" >> beam.CombineGlobally(SumTuples(3))
    input_rules = read[RULES] | "CountInputRules" >> beam.CombineGlobally(SumCounts())
    reasons = read[REJECTS] | "CountRejectReasons" >> CountRejectReasons()
    written = ({"chunks": read["chunks"],
                "rejected_counts": stats | "Rejected" >> beam.Map(lambda counts: counts[1]),
                "holds": stats | "FileErrorHold" >> beam.FlatMap(lambda counts: file_error_holds(counts[2]))}
               | "Write" >> WriteBounded(settings))

    return (p
            | "ReportSeed" >> beam.Create([None])
            | "Report" >> beam.Map(write_report, config, report_target, log_report,
                                   beam.pvalue.AsSingleton(stats), beam.pvalue.AsList(written.summaries),
                                   beam.pvalue.AsList(written.results), beam.pvalue.AsList(dead_letters),
                                   beam.pvalue.AsList(read[FILE_ERRORS]),
                                   beam.pvalue.AsSingleton(input_rules), beam.pvalue.AsSingleton(reasons)))
