"""TallyRejects: how many rows were rejected, and the most frequent reasons, with one example each.

A combine over the dead-letter records: each bundle keeps a count and one example per kind
of reason, and those small tallies are merged, so the rejects never gather on one machine.
"""
import json

import apache_beam as beam

from anycost.outcomes import reject_reasons as rejects


class _TallyReasons(beam.CombineFn):
    """Over dead-letter lines: {"rows": rejected rows, "reasons": the most frequent reasons}."""

    def create_accumulator(self):
        return [0, rejects.empty()]

    def add_input(self, accumulator, line):
        accumulator[0] += 1
        accumulator[1] = rejects.add(accumulator[1], json.loads(line))
        return accumulator

    def merge_accumulators(self, accumulators):
        accumulators = list(accumulators)
        return [sum(rows for rows, _ in accumulators), rejects.merge(tally for _, tally in accumulators)]

    def extract_output(self, accumulator):
        return {"rows": accumulator[0], "reasons": rejects.top(accumulator[1])}


class _TallyRejects(beam.PTransform):
    """Example: `tally = dead_letter_lines | _TallyRejects()`: a singleton {"rows": rejected
    rows, "reasons": [{"reason", "count", "example"}, ...]}, most frequent first (empty when
    nothing was rejected)."""

    def expand(self, lines):
        return lines | "TallyReasons" >> beam.CombineGlobally(_TallyReasons())
