"""The command line's dead letter and its tally of reasons, written by the bundles that reject rows.

Each bundle appends its rejected rows, as JSON lines, to one new part file in the run's parts
folder and counts their reasons. Once the file is closed it emits one small `RejectPart`
(path, rows, tally). The report step gathers the parts into the dead letter and merges the
tallies. This is the pattern of the chunk files and of `WriteToBigQuery`'s file loads: a
retried bundle writes a fresh part, and only the parts of the attempts the runner kept reach
the report, so no row is written twice. It replaces a `WriteToText` and a combine, which
cost the in-process runner about five stages for what, most runs, is nothing at all.
"""
import logging
import shutil
import typing
import uuid
import weakref

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from anycost.inputs import chunk_files, dead_letter
from anycost.outcomes import reject_reasons

LOG = logging.getLogger("cloudzero")
PART_SUFFIX = ".jsonl"
COPY_BYTES = 1 << 20
_FOLDERS = weakref.WeakKeyDictionary()  # pipeline -> its parts folder, removed by the launcher if left


class RejectPart(typing.NamedTuple):
    """One bundle's rejected rows: the part file they are in, how many, and their reasons."""
    path: str
    rows: int
    tally: dict


def parts_folder(pipeline, dead_letter_prefix):
    """A new folder beside the dead letter for this run's parts (same filesystem, new name)."""
    folder = _FOLDERS[pipeline] = f"{dead_letter_prefix}-parts-{uuid.uuid4().hex[:12]}"
    return folder


def remove_left_over(pipeline):
    """Remove the parts folder of a run that ended before its report gathered it; never raises."""
    folder = _FOLDERS.pop(pipeline, None)
    if folder is None:
        return
    try:
        remove_parts(folder)
    except Exception as err:  # pylint: disable=broad-except
        LOG.warning("could not remove the rejected rows' part files in %s: %s", folder, err)


class _WriteRejectParts(beam.DoFn):
    """Rejected-row records -> one `RejectPart` per bundle that rejected any, emitted once its
    file is closed (in the global window, where the bounded write emits its rejects)."""

    def __init__(self, folder):
        self._folder = folder

    def start_bundle(self):
        self._handle, self._path, self._rows, self._tally = None, None, 0, reject_reasons.empty()

    def process(self, record):
        if self._handle is None:
            self._path = FileSystems.join(self._folder, uuid.uuid4().hex + PART_SUFFIX)
            self._handle = FileSystems.create(self._path, compression_type=CompressionTypes.UNCOMPRESSED)
        self._handle.write(dead_letter.dumps_reject(record).encode("utf-8") + b"\n")
        self._rows += 1
        self._tally = reject_reasons.add(self._tally, record)

    def finish_bundle(self):
        if self._handle is None:
            return
        self._handle.close()
        self._handle = None
        yield GlobalWindows.windowed_value(RejectPart(self._path, self._rows, self._tally))


def tally(parts):
    """{"rows": rejected rows, "reasons": the most frequent reasons} over every part."""
    return {"rows": sum(part.rows for part in parts),
            "reasons": reject_reasons.top(reject_reasons.merge(part.tally for part in parts))}


def gather(parts, dead_letter_prefix, folder):
    """Concatenate the parts into the dead letter `<prefix>-00000-of-00001.jsonl`, then remove
    them; returns [its path], or [] when nothing was rejected (no file is written).

    Safe to run again: the parts are removed only once the dead letter is whole, so a retry
    that finds parts gone and the dead letter there has nothing left to do."""
    if not parts:
        return []
    target = f"{dead_letter_prefix}-00000-of-00001{PART_SUFFIX}"
    paths = sorted(part.path for part in parts)
    missing = [path for path in paths if not FileSystems.exists(path)]
    if missing:
        if FileSystems.exists(target):
            return [target]
        raise OSError(f"the rejected rows' part files are gone (such as {missing[0]}), and {target} was "
                      "never written; was the folder cleaned up while the run was going?")
    with FileSystems.create(target, compression_type=CompressionTypes.UNCOMPRESSED) as out:
        for path in paths:
            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as part:
                shutil.copyfileobj(part, out, COPY_BYTES)
    remove_parts(folder)
    return [target]


def remove_parts(folder):
    """Delete the parts folder and what is in it; a folder already gone is fine."""
    chunk_files.remove_folder(folder, suffix=PART_SUFFIX)
