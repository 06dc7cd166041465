"""Where the bounded write path keeps its chunk files, and their removal when the run ends.

`anycost.inputs.chunk_files` writes and reads them; this module picks a folder per
pipeline run in `expand()` (under `temp_location` when the pipeline has one, as on Dataflow;
else in the local temp folder, which only a local runner's workers share) and adds the
final step that deletes it once every body result exists, so nothing reads it afterwards.
A run that fails before that step leaves the folder; the command line removes it on its
way out, and a rerun never needs it (it resumes from the ledger).
"""
import datetime as dt
import logging
import os
import tempfile
import uuid
import weakref

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions
from apache_beam.io.filesystems import FileSystems

from anycost.inputs import chunk_files

LOG = logging.getLogger("cloudzero")
FOLDER_PREFIX = "anycost-chunks-"

_FOLDERS = weakref.WeakKeyDictionary()  # pipeline -> the chunk folders its transforms chose


def _chunk_folder(pipeline):
    """A new folder for this run's chunk files: `<temp_location>/anycost-chunks-<stamp>-<id>`,
    or the same name in the local temp folder when the pipeline has no temp_location."""
    temp = pipeline.options.view_as(GoogleCloudOptions).temp_location
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    name = f"{FOLDER_PREFIX}{stamp}-{uuid.uuid4().hex[:12]}"
    folder = FileSystems.join(temp, name) if temp else os.path.join(tempfile.gettempdir(), name)
    _FOLDERS.setdefault(pipeline, []).append(folder)
    return folder


def _remove(_, folder, _results_done):
    removed = chunk_files.remove_folder(folder)
    LOG.debug("removed %d chunk file(s) in %s", removed, folder)
    return removed


class _RemoveChunkFiles(beam.PTransform):
    """Example: `results | _RemoveChunkFiles(folder)`: deletes `folder` once `results` is complete."""

    def __init__(self, folder):
        super().__init__()
        self._folder = folder

    def expand(self, results):
        # An iterable side input: the step waits for every result, and reads none of them.
        return (results.pipeline
                | "RemoveSeed" >> beam.Create([None])
                | "Remove" >> beam.Map(_remove, self._folder, beam.pvalue.AsIter(results)))


def _remove_left_over(pipeline):
    """Remove the chunk folders of `pipeline` that its final step did not (the run failed or
    was stopped); for the launcher's exit path. Never raises: a folder it cannot remove is
    logged and left."""
    for folder in _FOLDERS.pop(pipeline, []):
        try:
            chunk_files.remove_folder(folder)
        except Exception as err:  # pylint: disable=broad-except
            LOG.warning("could not remove the temporary chunk files in %s: %s", folder, err)
