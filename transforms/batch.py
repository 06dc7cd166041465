"""CbfBatch: what `ReadCbf` emits and `WriteToAnyCost` takes, one element per record batch.

A batch keeps where its rows came from (file, position, row numbers), so that the write
path gives the same bodies and keys as the command line, in file order, and names a bad
row's file and line in the dead letter. Rows refused while reading travel in `rejects`; a
file that broke part-way ends with an element whose `file_error` holds every POST back.
"""
import pickle
from typing import Mapping, NamedTuple, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
import pyarrow as pa


class CbfBatch(NamedTuple):
    """Rows of one input file as Common Bill Format text columns, with their positions.

    Attributes:
      batch: a `pyarrow.RecordBatch` of string columns named by CBF (`time/usage_start`,
        `cost/cost`, `resource/tag:...`; plus the stream column, if any), after the column
        map, FOCUS mapping and tag-key rules. Not yet validated: `WriteToAnyCost` does that.
      file: the path the rows were read from.
      order: a tuple that sorts batches into input order (file, part, batch); bodies are cut
        in this order, so keep it when you change a batch.
      row_numbers: a numpy int array, the 1-based data row number in `file` of each row of
        `batch` (the dead letter names it).
      rejects: dead-letter records of rows refused while reading (a ragged CSV row, invalid
        UTF-8, a FOCUS row in another currency): dicts `{"file", "row", "reason", "values"}`.
        `WriteToAnyCost` puts them in `result.rejected`, and they count toward
        `max_rejected_rows`.
      file_error: None, or why `file` could not be read to the end. Such an element holds an
        empty batch; `WriteToAnyCost` then posts nothing at all, since the file's rows are
        incomplete.
      input_rules: {rule: rows} counts of the input rules applied (FOCUS mapping, sanitised
        tag keys), for the command line's report.
    """
    batch: pa.RecordBatch
    file: str
    order: Tuple
    row_numbers: np.ndarray
    rejects: Sequence[dict] = ()
    file_error: Optional[str] = None
    input_rules: Mapping[str, int] = {}

    @property
    def rows_read(self):
        """Rows this element accounts for: the batch's and those refused while reading."""
        return self.batch.num_rows + len(self.rejects)

    def filter(self, mask):
        """The rows where `mask` (a boolean array or Arrow array, one per row) is true,
        with their row numbers; the rest are dropped silently, not rejected."""
        keep = np.asarray(mask.to_numpy(zero_copy_only=False) if hasattr(mask, "to_numpy") else mask, bool)
        return self._replace(batch=self.batch.filter(pa.array(keep)), row_numbers=self.row_numbers[keep])


class _CbfBatchCoder(beam.coders.Coder):
    """CbfBatch's coder: pickled where a runner must encode one, and sized without encoding it.

    Beam samples the size of the elements every step emits (the first ones, then fewer).
    With the fallback coder, each sampled ReadCbf batch had all of its rows pickled (megabytes
    a batch) on the thread that reads, only to be measured."""

    def encode(self, value):
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded):
        return pickle.loads(encoded)

    def estimate_size(self, value):
        return value.batch.nbytes + value.row_numbers.nbytes + 256 * (len(value.rejects) + 1)

    def is_deterministic(self):
        return False

    def to_type_hint(self):
        return CbfBatch

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


beam.coders.registry.register_coder(CbfBatch, _CbfBatchCoder)
