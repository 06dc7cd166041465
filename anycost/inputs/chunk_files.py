"""Chunk files: a bundle's chunk rows on disk, and the small references that cross the shuffles.

The bounded write path appends every chunk's rows (JSON) to one temporary file
per bundle and shuffles a `ChunkRef` instead: everything a `Chunk` carries but its rows,
plus where those rows are (path, offset, length). Row lengths and hours stay in the
reference, so the planner works from it alone; the sink reads a month's rows back through
`json_rows()` as it builds that month's bodies. So what the runner holds grows with the
number of rows (a few bytes each), not with their size, and the rows cross no shuffle.
This is the pattern of Beam's `WriteToBigQuery` file loads. Any Beam filesystem works
(`FileSystems`): a local folder for local runners, `<temp_location>/...` on Dataflow.
The files serve one run only; a rerun never reads them (it resumes from the ledger).
`compress_rows` says whether their rows are LZ4-compressed. No HTTP.
"""
import collections
import os
import re
import threading
import uuid

import pyarrow as pa
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from anycost.inputs.chunking import Chunk

SUFFIX = ".rows"
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


def compress_rows(folder, mounts="/proc/mounts"):
    """Whether chunk rows written under `folder` are to be LZ4-compressed (`RowSettings.compress_rows`).

    Not on a local disk: the files come back from the page cache, and compressing and then
    decompressing every row cost about a tenth of the command line's CPU (`benchmarks.run
    --baseline` shows the before and after). In object storage (any scheme but `file`, such
    as `gs://` on Dataflow) the bytes travel over the network, and on a memory filesystem
    (tmpfs) the files would hold the rows in RAM: there they are compressed, about 5x."""
    scheme = FileSystems.get_scheme(folder)
    if scheme not in (None, "file"):
        return True
    local = folder[len("file://"):] if scheme == "file" else folder
    return filesystem_type(local, mounts) in MEMORY_FILESYSTEMS


def filesystem_type(path, mounts="/proc/mounts"):
    """The type (`ext4`, `tmpfs`...) of the mount that holds `path`, from a mount table in
    /proc/mounts' format; None when there is no such table (not Linux)."""
    try:
        with open(mounts, encoding="utf-8", errors="replace") as table:
            lines = table.read().splitlines()
    except OSError:
        return None
    target, best, found = os.path.realpath(path), -1, None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])  # `\040` is a space
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:  # the deepest mount wins; a later one over the same point too
            best, found = len(point), fields[2]
    return found


_FIELDS = ("order", "row_count", "lengths", "cost_total", "hours", "codec", "rows_size", "resource_ids_cut",
           "resource_id_example", "source_file", "path", "offset", "length")


class ChunkRef(collections.namedtuple("ChunkRef", _FIELDS)):
    """A `Chunk` whose rows are bytes [offset, offset + length) of the chunk file `path`.

    The fields are a `Chunk`'s but `rows`, which is read from the file on demand (never
    cached, so a reference stays small wherever it is held). `_replace(rows=b"")` gives a
    reference to no rows, as the planner's row-lengths branch makes of every chunk.
    """
    __slots__ = ()

    @property
    def rows(self):
        return read_span(self.path, self.offset, self.length)

    def json_rows(self):
        rows = self.rows
        if not self.codec or not rows:
            return rows
        return pa.decompress(rows, self.rows_size, codec=self.codec, asbytes=True)

    def _replace(self, **changes):
        if "rows" in changes:
            if changes.pop("rows") != b"":
                raise ValueError("a ChunkRef's rows live in its chunk file; only rows=b'' (no rows) can be set")
            changes.update(path="", offset=0, length=0)
        return super()._replace(**changes)


def reference(chunk: Chunk, path, offset) -> ChunkRef:
    """The reference to `chunk` once its rows are written at `offset` of `path`."""
    return ChunkRef(chunk.order, chunk.row_count, chunk.lengths, chunk.cost_total, chunk.hours, chunk.codec,
                    chunk.rows_size, chunk.resource_ids_cut, chunk.resource_id_example, chunk.source_file,
                    path, offset, len(chunk.rows))


class ChunkFile:
    """One bundle's chunk file under `folder`, named afresh (a retried bundle never reuses
    a file). Write chunks with `add`; `close` it before any reference leaves the bundle."""

    def __init__(self, folder):
        self.path = FileSystems.join(folder, uuid.uuid4().hex + SUFFIX)
        self._handle = None
        self._offset = 0

    def add(self, chunk: Chunk) -> ChunkRef:
        if self._handle is None:
            self._handle = FileSystems.create(self.path, compression_type=CompressionTypes.UNCOMPRESSED)
        ref = reference(chunk, self.path, self._offset)
        self._handle.write(chunk.rows)
        self._offset += len(chunk.rows)
        return ref

    def close(self):
        if self._handle is not None:
            self._handle.close()
            self._handle = None


_READERS = threading.local()  # each thread keeps its last chunk file open: a month's chunks come in runs


def read_span(path, offset, length):
    """Bytes [offset, offset + length) of a chunk file; OSError naming it when they are not all there."""
    if not length:
        return b""
    last = getattr(_READERS, "last", None)
    if last is None or last[0] != path:
        if last is not None:
            last[1].close()
        _READERS.last = None
        last = _READERS.last = (path, FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED))
    handle = last[1]
    handle.seek(offset)
    data = handle.read(length)
    if len(data) != length:
        raise OSError(f"chunk file {path} holds {offset + len(data)} bytes, not the {offset + length} "
                      "this run wrote; was its temporary folder cleaned up while the run was going?")
    return data


def forget_open_files():
    """Close this thread's open chunk file, if any (before its folder is removed)."""
    last = getattr(_READERS, "last", None)
    _READERS.last = None
    if last is not None:
        last[1].close()


def remove_folder(folder, suffix=SUFFIX):
    """Delete a run's chunk files (or other files named `*suffix`) and their folder; a folder
    already gone is fine. Returns how many files were deleted."""
    forget_open_files()
    try:
        paths = [m.path for m in FileSystems.match([FileSystems.join(folder, "*" + suffix)])[0].metadata_list]
    except Exception:  # pylint: disable=broad-except  # Beam raises BeamIOError when nothing matches
        paths = []
    if paths:
        FileSystems.delete(paths)
    if FileSystems.exists(folder):  # a local folder (an object store has no folders to remove)
        FileSystems.delete([folder])
    return len(paths)
