"""ReadCbf: Common Bill Format (or FOCUS) files in, `CbfBatch` elements out."""
import collections
import json
import logging

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.transforms.display import DisplayDataItem

from anycost.config import RowSettings
from anycost.inputs import files, normalise, readers, sources
from anycost.outcomes import progress
from transforms.batch import CbfBatch

_EMPTY = pa.RecordBatch.from_arrays([], schema=pa.schema([]))


def _row_settings(input_format, column_map, unknown_columns, tag_keys, csv_delimiter, currency, stream_column):
    """ReadCbf's arguments as RowSettings; ValueError naming the argument that is wrong."""
    if input_format not in sources.INPUT_FORMATS:
        raise ValueError(f"input_format must be one of {', '.join(sources.INPUT_FORMATS)}, not {input_format!r}")
    if unknown_columns not in sources.UNKNOWN_COLUMNS:
        raise ValueError(f"unknown_columns must be one of {', '.join(sources.UNKNOWN_COLUMNS)}, "
                         f"not {unknown_columns!r}")
    if tag_keys is None:
        tag_keys = "sanitize" if input_format == sources.FOCUS else "refuse"
    if tag_keys not in sources.TAG_KEYS:
        raise ValueError(f"tag_keys must be one of {', '.join(sources.TAG_KEYS)}, not {tag_keys!r}")
    if not (isinstance(csv_delimiter, str) and len(csv_delimiter) == 1 and csv_delimiter not in "\"\r\n"):
        raise ValueError(f"csv_delimiter must be one character (not a quote or a line break), not {csv_delimiter!r}")
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isascii() and currency.isalpha()):
        raise ValueError(f"currency must be a three-letter ISO 4217 code such as USD, not {currency!r}")
    if stream_column is not None and not (isinstance(stream_column, str) and stream_column):
        raise ValueError(f"stream_column must be a column name, not {stream_column!r}")
    pairs = ()
    if column_map:
        try:
            pairs = sources.parse_column_map(json.dumps(dict(column_map)), "column_map")
        except (sources.ColumnMapError, TypeError, ValueError) as err:
            raise ValueError(str(err)) from None
    return RowSettings(stream_column=stream_column, input_format=input_format, column_map=pairs,
                       unknown_columns=unknown_columns, tag_keys=tag_keys, csv_delimiter=csv_delimiter,
                       currency=currency.upper())


def _to_cbf_batch(text: readers.TextBatch, path, order, settings: RowSettings) -> CbfBatch:
    """One text batch of a file as CBF columns (column map, FOCUS mapping, tag keys applied).

    FOCUS rows are also validated here, so that a rejected row is reported with the FOCUS
    values the file holds; the batch then keeps the good rows only, which validate again
    to the same chunks downstream. CBF rows are validated once, by `WriteToAnyCost`."""
    rejects = list(text.rejects)
    row_numbers = text.row_numbers
    if settings.input_format != sources.FOCUS:
        prepared = sources.prepare(text.batch, settings)
        return CbfBatch(prepared.batch, path, order, row_numbers, rejects, input_rules=prepared.counts)
    validated, rules = sources.normalise_batch(text.batch, normalise.SourceBatch(path, order, row_numbers), settings)
    prepared = sources.prepare(text.batch, settings).batch
    if validated.rejects:
        keep = ~np.isin(row_numbers, [record["row"] for record in validated.rejects])
        prepared, row_numbers = prepared.filter(pa.array(keep)), row_numbers[keep]
    return CbfBatch(prepared, path, order, row_numbers, rejects + validated.rejects, input_rules=rules)


class _ReadSplit(beam.DoFn):
    """A FileSplit -> a CbfBatch per record batch; a file that breaks part-way ends with a
    CbfBatch holding its `file_error` (never a traceback that fails the job)."""

    def __init__(self, settings: RowSettings, parts_per_file=None):
        self._settings = settings
        self._parts_per_file = parts_per_file or {}
        self._rows_read = Metrics.counter("cloudzero", "rows_read")
        self._rows_rejected = Metrics.counter("cloudzero", "rows_rejected")

    def setup(self):
        self._progress = progress.ReadProgress(self._parts_per_file, logging.getLogger("cloudzero").info)

    def process(self, split: files.FileSplit):
        rows_read = rejected = 0
        try:
            with files.open_binary(split.path) as handle:
                for index, text in enumerate(readers.read_batches(handle, split.path, split.format,
                                                                  split.row_groups,
                                                                  **sources.reader_options(self._settings))):
                    element = _to_cbf_batch(text, split.path, split.order + (index,), self._settings)
                    rows_read += element.rows_read
                    rejected += len(element.rejects)
                    self._progress.rows(element.rows_read)
                    yield element
        except Exception as err:  # pylint: disable=broad-except
            # Whatever stops a file part-way, its rows are incomplete: report it and let the
            # write hold every POST back, instead of failing the job with a traceback.
            if isinstance(err, readers.InputFileError):
                message = str(err)
            else:
                message = f"{split.path}: could not be read: {type(err).__name__}: {str(err)[:300]}"
            message += f" (after {rows_read} rows of this part of the file)"
            yield CbfBatch(_EMPTY, split.path, split.order + (-1,), np.zeros(0, np.int64), file_error=message)
        self._rows_read.inc(rows_read)
        self._rows_rejected.inc(rejected)
        self._progress.part_done(split.path, rows_read, rejected)


class ReadCbf(beam.PTransform):
    """Reads Common Bill Format or FOCUS files (CSV, CSV.gz, Parquet) from any Beam filesystem.

    Example::

        import apache_beam as beam
        from transforms import ReadCbf, WriteToAnyCost

        with beam.Pipeline() as p:
            result = (p
                      | ReadCbf("gs://bucket/bills/2024-09/*.parquet")
                      | WriteToAnyCost(connection_id="my-connection"))

    The patterns are expanded, and every file's header (or Parquet footer) is checked, when
    the transform is built: a missing file, a column that is not CBF or an unreadable file
    raises `anycost.inputs.files.InputProblems`, listing every problem, before the pipeline
    runs. Big Parquet files are read in parallel, a few row groups per part.

    Output: one `CbfBatch` per record batch read (see `transforms.CbfBatch`): the rows as
    CBF text columns with their file, position and row numbers, plus the rows refused while
    reading (`rejects`) and, for a file that broke part-way, a last element with its
    `file_error`. Fed to `WriteToAnyCost`, the pipeline keeps the command line's
    guarantees for the same files: read rejects count toward `max_rejected_rows` and are in
    `result.rejected`; a broken file holds every POST back; bodies and idempotency keys are
    the command line's, in file order. A transform in between may drop or change rows::

        | beam.Map(lambda b: b.filter(pc.not_equal(b.batch.column("lineitem/type"), "Tax")))

    (keep `order`, `rejects` and `file_error` as they are: `CbfBatch.filter` does).

    Args:
      file_pattern: a glob over any Beam filesystem (local, gs://, ...) or a list of them.
      input_format: "cbf" (default): columns are CBF columns; "focus": FinOps FOCUS 1.0-1.2
        exports, mapped to CBF (`InputFormat.CBF`, `InputFormat.FOCUS`).
      column_map: a dict {source column: CBF column} applied to every file's header before
        anything else. Default None.
      unknown_columns: "refuse" (default): a column that is not CBF stops the pipeline
        before it runs; "drop": such columns are left out.
      tag_keys: "refuse": a tag key CloudZero does not allow stops the pipeline; "sanitize":
        each bad character becomes "_". Default None: refuse for cbf, sanitize for focus.
      csv_delimiter: one character, default ",".
      currency: FOCUS only: rows in another BillingCurrency are rejected. Default "USD".
      stream_column: the column naming each row's connection, kept for
        `WriteToAnyCost(stream_column=...)`. Default None.

    Raises:
      ValueError: naming the argument, for an argument that cannot work.
      anycost.inputs.files.InputProblems: when the files cannot be read as asked.
    """

    def __init__(self, file_pattern, input_format="cbf", column_map=None, unknown_columns="refuse",
                 tag_keys=None, csv_delimiter=",", currency="USD", stream_column=None):
        super().__init__()
        patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
        if not patterns or not all(isinstance(pattern, str) and pattern for pattern in patterns):
            raise ValueError(f"file_pattern must be a glob or a list of globs, not {file_pattern!r}")
        settings = _row_settings(input_format, column_map, unknown_columns, tag_keys, csv_delimiter, currency,
                                 stream_column)
        self._init(patterns, files.plan(patterns, settings), settings)

    @classmethod
    def _planned(cls, patterns, splits, settings: RowSettings):
        """The command line's ReadCbf, over the `FileSplit`s it has planned with its own flags."""
        transform = cls.__new__(cls)
        beam.PTransform.__init__(transform)
        transform._init(list(patterns), files.InputPlan(list(splits)), settings)
        return transform

    def _init(self, patterns, plan, settings):
        self._patterns = patterns
        self._plan = plan
        self._settings = settings

    @property
    def plan(self):
        """The `anycost.inputs.files.InputPlan`: the splits, the columns left out, warnings."""
        return self._plan

    def display_data(self):
        settings = self._settings
        return {
            "file_pattern": DisplayDataItem(", ".join(self._patterns), label="File pattern"),
            "files": DisplayDataItem(len({split.path for split in self._plan.splits}), label="Files matched"),
            "input_format": settings.input_format,
            "column_map": DisplayDataItem(json.dumps(dict(settings.column_map)), label="Column map"),
            "unknown_columns": settings.unknown_columns,
            "tag_keys": settings.tag_keys,
            "csv_delimiter": settings.csv_delimiter,
            "currency": settings.currency,
            "stream_column": settings.stream_column or "",
        }

    def expand(self, pbegin):
        splits = self._plan.splits
        return (pbegin
                | "Splits" >> beam.Create(splits)
                | "Spread" >> beam.Reshuffle()
                | "Read" >> beam.ParDo(_ReadSplit(self._settings,
                                                  collections.Counter(split.path for split in splits)))
                .with_output_types(CbfBatch))
