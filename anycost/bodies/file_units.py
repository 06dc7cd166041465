"""A watched file as its own unit of delivery: the core of `--watch`.

A file's identity is its path, size and modification time (on GCS, the object's update
time): a file rewritten in place is a new file, and two files with identical rows are two
deliveries, because the identity is part of every body's idempotency key. A file is read
whole, validated, and gated on its own: over the reject limit, or unreadable, it is held
back whole and reported, while other files go on. No Beam transforms, no HTTP; reading
goes through Beam's FileSystems (local paths, gs://), like `anycost.inputs.files`.
"""
import collections
import dataclasses
import hashlib
from typing import Dict, List, NamedTuple, Optional

from anycost import words
from anycost.inputs import files, normalise, readers, sources
from anycost.bodies import packing
from anycost.config import RowSettings


class FileIdentity(NamedTuple):
    path: str
    size: int
    mtime: float

    @property
    def text(self):
        return f"{self.path} size {self.size} mtime {self.mtime!r}"

    @property
    def digest(self):
        """Short and stable: names the file's result records and dead-letter file."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:20]


@dataclasses.dataclass
class FileRead:
    """What reading one file gave: its chunks per connection and month, and its verdict."""
    identity: FileIdentity
    chunks: Dict[str, Dict[str, list]]  # connection -> month -> [Chunk] in file order
    rejects: List[dict]  # dead-letter records naming the file and the row
    rows_read: int = 0
    held: Optional[str] = None  # why the whole file is held back, or None
    file_error: Optional[str] = None  # why the file could not be read to the end


def read_file(identity: FileIdentity, settings: RowSettings, max_rejected_rows, keep=None) -> FileRead:
    """Read and validate one whole file; never raises for a bad file, it says why instead.

    `keep(connection_id, chunk)` is what `chunks` holds of each chunk as it is made (for
    `--watch`, a reference to its rows written to a chunk file, so a big file's rows are
    never all in memory); by default the chunk itself."""
    path = identity.path
    read = FileRead(identity, collections.defaultdict(lambda: collections.defaultdict(list)), [])
    fmt = readers.file_format(path)
    try:
        if fmt is None:
            raise readers.InputFileError(f"{path}: unknown format; use .csv, .csv.gz or .parquet")
        with files.open_binary(path) as handle:
            info = readers.inspect(handle, path, fmt, settings.csv_delimiter)
        problems = readers.header_problems(info, settings=settings)
        if problems:
            raise readers.InputFileError("; ".join(problems))
        with files.open_binary(path) as handle:
            batches = readers.read_batches(handle, path, fmt, **sources.reader_options(settings))
            for index, text in enumerate(batches):
                source = normalise.SourceBatch(path, (0, 0, index), text.row_numbers)
                result, _ = sources.normalise_batch(text.batch, source, settings)
                for (connection_id, month), chunk in result.chunks:
                    read.chunks[connection_id][month].append(keep(connection_id, chunk) if keep else chunk)
                read.rejects += text.rejects + result.rejects
                read.rows_read += result.rows_in + len(text.rejects)
    except (readers.InputFileError, OSError) as err:
        read.file_error = str(err) if isinstance(err, readers.InputFileError) else f"{path}: cannot be read: {err}"
        read.held = f"{read.file_error}; the file was not sent"
        return read
    if len(read.rejects) > max_rejected_rows:
        read.held = (f"{path}: {words.plural(len(read.rejects), 'row')} {'was' if len(read.rejects) == 1 else 'were'} rejected, more than max_rejected_rows "
                     f"{max_rejected_rows}; nothing of this file was sent. Fix the rows in the dead-letter "
                     "file and write the file again")
    return read


def file_plans(identity: FileIdentity, connection_id, months, operation, max_body_bytes):
    """The file's stream-month plans for one connection, months ascending, with bodies whose
    keys name the file: the same file always gives the same keys, another file other keys."""
    plans = []
    for month in sorted(months):
        plan = packing.plan_stream_month(connection_id, month, months[month], operation, max_body_bytes)
        bodies = [dataclasses.replace(body, idempotency_key=packing.idempotency_key(
            connection_id, month, operation, f"file {identity.text} body {body.seq}", body.body))
            for body in plan.bodies]
        plans.append(dataclasses.replace(plan, bodies=bodies))
    return plans
