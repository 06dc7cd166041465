"""The Beam graph of the command line: the public `ReadCbf | WriteToAnyCost`, plus the report.

    files --ReadCbf--> CbfBatch --WriteToAnyCost--> delivered, failed, rejected,
              |                                     stream_months, body_results
              |  rows read, file errors, input rules --------------+
              |                   rejected --> dead-letter JSON Lines, reasons
              +--> report (JSON at report_path, table in the log) <+

`WriteToAnyCost` gates the POSTs on every read reject and every file that broke part-way,
as it does for any user's `ReadCbf | WriteToAnyCost`; the report's branches carry counts only.
"""
import collections
import json
import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from anycost.inputs import dead_letter
from anycost.outcomes import report as run_report
from transforms.read import ReadCbf
from transforms.reasons import _CountRejectReasons
from transforms.write import WriteToAnyCost

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


class _SumCounts(beam.CombineFn):
    """Sum of {name: count} dicts."""

    def create_accumulator(self):
        return collections.Counter()

    def add_input(self, accumulator, element):
        accumulator.update(element)
        return accumulator

    def merge_accumulators(self, accumulators):
        total = collections.Counter()
        for accumulator in accumulators:
            total.update(accumulator)
        return total

    def extract_output(self, accumulator):
        return dict(sorted(accumulator.items()))


def build(p, config, splits, dead_letter_prefix, report_target, log_report=True):
    """Add the whole connector to pipeline `p`, over the `FileSplit`s the command line
    planned; returns the report path's PCollection."""
    batches = p | "ReadCbf" >> ReadCbf._planned(config.inputs, splits, config.normalise_settings())
    written = batches | "WriteToAnyCost" >> WriteToAnyCost._from_settings(config.write_settings())

    lines = written.rejected | "DeadLetterLines" >> beam.Map(dead_letter.dumps_reject)
    dead_letters = lines | "WriteDeadLetter" >> beam.io.WriteToText(
        dead_letter_prefix, file_name_suffix=".jsonl", skip_if_empty=True)
    reasons = lines | "CountRejectReasons" >> _CountRejectReasons()
    file_errors = batches | "FileErrors" >> beam.FlatMap(lambda b: [b.file_error] if b.file_error else [])
    rows_read = (batches | "RowsRead" >> beam.Map(lambda b: b.rows_read)
                 | "SumRowsRead" >> beam.CombineGlobally(sum))
    rejected = written.rejected | "CountRejected" >> beam.combiners.Count.Globally()
    stats = (p
             | "StatsSeed" >> beam.Create([None])
             | "Stats" >> beam.Map(lambda _, read, bad, broken: (read, bad, len(broken)),
                                   beam.pvalue.AsSingleton(rows_read), beam.pvalue.AsSingleton(rejected),
                                   beam.pvalue.AsList(file_errors)))
    input_rules = (batches | "InputRules" >> beam.Map(lambda b: b.input_rules)
                   | "CountInputRules" >> beam.CombineGlobally(_SumCounts()))

    return (p
            | "ReportSeed" >> beam.Create([None])
            | "Report" >> beam.Map(write_report, config, report_target, log_report,
                                   beam.pvalue.AsSingleton(stats), beam.pvalue.AsList(written.stream_months),
                                   beam.pvalue.AsList(written.body_results), beam.pvalue.AsList(dead_letters),
                                   beam.pvalue.AsList(file_errors),
                                   beam.pvalue.AsSingleton(input_rules), beam.pvalue.AsSingleton(reasons)))
