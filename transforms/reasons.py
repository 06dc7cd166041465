"""CountRejectReasons: the most frequent reasons rows were rejected, with one example each.

A combine over the dead-letter records: each bundle keeps a count and one example per kind
of reason, and those small tallies are merged, so the rejects never gather on one machine.
"""
import json

import apache_beam as beam

from anycost.outcomes import reject_reasons as rejects


class _TallyReasons(beam.CombineFn):
    def create_accumulator(self):
        return rejects.empty()

    def add_input(self, tally, line):
        return rejects.add(tally, json.loads(line))

    def merge_accumulators(self, tallies):
        return rejects.merge(tallies)

    def extract_output(self, tally):
        return rejects.top(tally)


class _CountRejectReasons(beam.PTransform):
    """Example: `reasons = dead_letter_lines | _CountRejectReasons()`: a singleton list of
    {"reason", "count", "example"}, most frequent first (empty when nothing was rejected)."""

    def expand(self, lines):
        return lines | "TallyReasons" >> beam.CombineGlobally(_TallyReasons())
