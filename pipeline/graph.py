"""The Beam graph of the command line: the public `ReadCbf | WriteToAnyCost`, plus the report.

    files --ReadCbf--> CbfBatch --WriteToAnyCost--> delivered, failed, rejected,
              |                                     stream_months, body_results
              |  rows read, file errors, input rules --------------+
              |                   rejected --> a part file per bundle, its reasons' tally
              +--> dead letter (the parts gathered), report (JSON, table in the log) <+

`WriteToAnyCost` gates the POSTs on every read reject and every file that broke part-way,
as it does for any user's `ReadCbf | WriteToAnyCost`; the report's branches carry counts only:
one combine (the reading's) and one small part per bundle that rejected rows
(`pipeline.rejects`). Each step of a Beam graph costs start-up time and a stage change on
the in-process runner, so the report adds as few as it can.
"""
import collections
import json
import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from anycost.outcomes import report as run_report
from pipeline import rejects
from transforms.read import ReadCbf
from transforms.write import WriteToAnyCost

LOG = logging.getLogger("cloudzero")


def write_report(_, config, report_target, log_report, reads, parts, summaries, results, dead_letter_prefix,
                 parts_folder):
    """The dead letter, gathered from the rejects' parts, then the report, from the reading's
    tally, the parts' tallies and every stream-month and body result."""
    dead_letters = rejects.gather(parts, dead_letter_prefix, parts_folder)
    rejected = rejects.tally(parts)
    bodies = [r for r in results if not isinstance(r, dict)]
    verifications = [r for r in results if isinstance(r, dict)]
    stats = (reads["rows_read"], rejected["rows"], len(reads["file_errors"]))
    report = run_report.build(config, stats, summaries, bodies, dead_letters, reads["file_errors"], verifications,
                              reads["input_rules"], reject_reasons=rejected["reasons"])
    with FileSystems.create(report_target) as handle:
        handle.write(json.dumps(report, indent=2, sort_keys=False).encode())
    if log_report:  # on Dataflow, the workers' log is where the summary shows up
        LOG.info("%s", run_report.render(report))
    return report_target


class _TallyReads(beam.CombineFn):
    """What the report says of the reading, in one combine over the batches: rows read, the
    files that broke part-way, and the input rules applied (FOCUS mapping, tag keys)."""

    def create_accumulator(self):
        return [0, [], collections.Counter()]

    def add_input(self, accumulator, batch):
        accumulator[0] += batch.rows_read
        if batch.file_error:
            accumulator[1].append(batch.file_error)
        accumulator[2].update(batch.input_rules)
        return accumulator

    def merge_accumulators(self, accumulators):
        total = self.create_accumulator()
        for rows, errors, rules in accumulators:
            total[0] += rows
            total[1].extend(errors)
            total[2].update(rules)
        return total

    def extract_output(self, accumulator):
        rows, errors, rules = accumulator
        return {"rows_read": rows, "file_errors": sorted(errors), "input_rules": dict(sorted(rules.items()))}


def build(p, config, splits, dead_letter_prefix, report_target, log_report=True):
    """Add the whole connector to pipeline `p`, over the `FileSplit`s the command line
    planned; returns the report path's PCollection."""
    batches = p | "ReadCbf" >> ReadCbf._planned(config.inputs, splits, config.normalise_settings())
    written = batches | "WriteToAnyCost" >> WriteToAnyCost._from_settings(config.write_settings())

    folder = rejects.parts_folder(p, dead_letter_prefix)
    parts = written.rejected | "WriteDeadLetter" >> beam.ParDo(rejects._WriteRejectParts(folder))
    reads = batches | "TallyReads" >> beam.CombineGlobally(_TallyReads())
    return (p
            | "ReportSeed" >> beam.Create([None])
            | "Report" >> beam.Map(write_report, config, report_target, log_report,
                                   beam.pvalue.AsSingleton(reads), beam.pvalue.AsList(parts),
                                   beam.pvalue.AsList(written.stream_months),
                                   beam.pvalue.AsList(written.body_results), dead_letter_prefix, folder))
