"""ReadCbf: file splits in, serialised row chunks out, with bad rows to the dead letter."""
import collections
import logging
import typing

import apache_beam as beam
from apache_beam.metrics import Metrics

from anycost.inputs import files, normalise, readers, sources
from anycost.outcomes import progress
from anycost.config import RowSettings
from anycost.inputs import dead_letter

REJECTS, STATS, FILE_ERRORS = "rejects", "stats", "file_errors"
RULES = "input_rules"  # {rule: rows} counts of the input rules applied (FOCUS, tag keys)


@beam.typehints.with_output_types(typing.Tuple[typing.Tuple[str, str], typing.Any])
class ReadAndNormalise(beam.DoFn):
    """Stream one split's record batches and validate them column by column.

    Main output: ((connection_id, month), Chunk). Tagged: dead-letter records (`rejects`),
    (rows_read, rows_rejected, file_errors) counts (`stats`) and messages for files that
    broke part-way (`file_errors`). Nothing here is per row in Python.
    """

    def __init__(self, settings: RowSettings, parts_per_file=None):
        self._settings = settings
        self._parts_per_file = parts_per_file or {}
        self._rows_read = Metrics.counter("cloudzero", "rows_read")
        self._rows_rejected = Metrics.counter("cloudzero", "rows_rejected")

    def setup(self):
        self._progress = progress.ReadProgress(self._parts_per_file, logging.getLogger("cloudzero").info)

    def process(self, split: files.FileSplit):
        rows_read = rejected = 0
        rules = collections.Counter()
        try:
            with files.open_binary(split.path) as handle:
                for index, text in enumerate(readers.read_batches(handle, split.path, split.format,
                                                                  split.row_groups,
                                                                  **sources.reader_options(self._settings))):
                    source = normalise.SourceBatch(split.path, split.order + (index,), text.row_numbers)
                    result, applied = sources.normalise_batch(text.batch, source, self._settings)
                    rules.update(applied)
                    yield from result.chunks
                    bad = text.rejects + result.rejects
                    for record in bad:
                        yield beam.pvalue.TaggedOutput(REJECTS, dead_letter.dumps_reject(record))
                    rows_read += result.rows_in + len(text.rejects)
                    rejected += len(bad)
                    self._progress.rows(result.rows_in + len(text.rejects))
        except Exception as err:  # pylint: disable=broad-except
            # Whatever stops a file part-way, its rows are incomplete: report it and let the
            # gate hold every POST back, instead of failing the job with a traceback.
            if isinstance(err, readers.InputFileError):
                message = str(err)
            else:
                message = f"{split.path}: could not be read: {type(err).__name__}: {str(err)[:300]}"
            message += f" (after {rows_read} rows of this part of the file)"
            yield beam.pvalue.TaggedOutput(FILE_ERRORS, message)
            yield beam.pvalue.TaggedOutput(STATS, (0, 0, 1))
        self._rows_read.inc(rows_read)
        self._rows_rejected.inc(rejected)
        self._progress.part_done(split.path, rows_read, rejected)
        if rules:
            yield beam.pvalue.TaggedOutput(RULES, dict(rules))
        yield beam.pvalue.TaggedOutput(STATS, (rows_read, rejected, 0))


class SumTuples(beam.CombineFn):
    """Element-wise sum of equal-length count tuples."""

    def __init__(self, width):
        self._width = width

    def create_accumulator(self):
        return (0,) * self._width

    def add_input(self, accumulator, element):
        return tuple(a + b for a, b in zip(accumulator, element))

    def merge_accumulators(self, accumulators):
        total = self.create_accumulator()
        for accumulator in accumulators:
            total = self.add_input(total, accumulator)
        return total

    def extract_output(self, accumulator):
        return accumulator


class SumCounts(beam.CombineFn):
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


class ReadCbf(beam.PTransform):
    """Reads Common Bill Format files (CSV, CSV.gz, Parquet; local or gs://), validated.

    Example::

        read = p | ReadCbf(["gs://bucket/bills/*.parquet"], WriteSettings(connection_id="c1"))
        written = ({"chunks": read["chunks"],
                    "rejected_counts": read["stats"] | beam.Map(lambda s: s[1])}
                   | WriteBounded(settings))

    Args:
      inputs: glob patterns over any Beam filesystem, planned (and their columns checked:
        `anycost.inputs.files.InputProblems`) when the transform is built; or the `FileSplit`s of
        `anycost.inputs.files.plan_splits`.
      settings: an `anycost.config.WriteSettings` or `anycost.RowSettings`.

    Returns the outputs of `ReadAndNormalise`: `chunks` (main), `rejects`, `stats`,
    `file_errors` and `rules`.
    """

    def __init__(self, inputs, settings):
        super().__init__()
        if hasattr(settings, "normalise_settings"):
            settings = settings.normalise_settings()
        if isinstance(inputs, str):
            inputs = [inputs]
        if inputs and all(isinstance(entry, str) for entry in inputs):
            inputs = files.plan(list(inputs), settings).splits
        self._splits = inputs
        self._settings = settings

    def expand(self, pbegin):
        return (pbegin
                | "Splits" >> beam.Create(self._splits)
                | "Spread" >> beam.Reshuffle()
                | "ReadAndValidate" >> beam.ParDo(ReadAndNormalise(
                    self._settings, collections.Counter(split.path for split in self._splits))).with_outputs(
                    REJECTS, STATS, FILE_ERRORS, RULES, main="chunks"))
