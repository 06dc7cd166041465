"""The launcher's look at the input before the pipeline starts.

Patterns are expanded, every file's header or footer is read, and every problem is
collected, so that a bad column or a corrupt file stops the run before anything is read
in earnest, with one message per problem naming the file. Big Parquet files are split by
row groups so that Dataflow can read them in parallel.
"""
import concurrent.futures
import dataclasses
import logging
from typing import List, Optional, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from anycost.inputs import readers, sources
from anycost.config import RowSettings

LOG = logging.getLogger("cloudzero")
PARQUET_ROW_GROUPS_PER_SPLIT = 4


@dataclasses.dataclass(frozen=True)
class FileSplit:
    """A unit of reading: a whole CSV file, or a range of a Parquet file's row groups."""
    file_index: int
    path: str
    format: str
    row_groups: Optional[Tuple[int, ...]] = None

    @property
    def order(self):
        return (self.file_index, self.row_groups[0] if self.row_groups else 0)


class InputProblems(Exception):
    def __init__(self, problems):
        super().__init__("\n".join(problems))
        self.problems = problems


def open_binary(path):
    """Raw bytes of any Beam filesystem path; decompression is the reader's job."""
    return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def expand(patterns, sizes=None) -> List[str]:
    """Every file the patterns match, sorted and de-duplicated; a pattern matching nothing is a problem.

    `sizes`, a dict, receives each file's size in bytes."""
    problems, paths = [], set()
    for pattern in patterns:
        try:
            metadata = FileSystems.match([pattern])[0].metadata_list
            matched = [m.path for m in metadata]
            if sizes is not None:
                sizes.update((m.path, m.size_in_bytes) for m in metadata)
        except Exception as err:  # Beam raises BeamIOError when nothing matches
            matched, reason = [], f" ({str(err).splitlines()[0][:200]})" if "No files" not in str(err) else ""
        else:
            reason = ""
        if not matched:
            problems.append(f"--input {pattern!r} matches no file{reason}")
        for path in matched:
            if readers.file_format(path) is None:
                problems.append(f"{path}: unknown format; use .csv, .csv.gz or .parquet")
            else:
                paths.add(path)
    if problems:
        raise InputProblems(problems)
    return sorted(paths)


def _inspect(path, delimiter=","):
    with open_binary(path) as handle:
        return readers.inspect(handle, path, readers.file_format(path), delimiter)


@dataclasses.dataclass(frozen=True)
class InputPlan:
    splits: List[FileSplit]
    dropped_columns: Tuple[str, ...] = ()  # source columns left out, over all files, sorted
    warnings: Tuple[str, ...] = ()  # for a person: empty files


def load_column_map(path):
    """A --column_map file as (source, target) pairs; a bad file is an input problem (exit 3)."""
    try:
        with open_binary(path) as handle:
            text = handle.read().decode("utf-8-sig")
    except Exception as err:  # pylint: disable=broad-except  (any filesystem's "cannot open")
        raise InputProblems([f"--column_map {path}: cannot be read: {str(err).splitlines()[0][:200]}"]) from None
    try:
        return sources.parse_column_map(text, f"--column_map {path}")
    except (sources.ColumnMapError, UnicodeDecodeError) as err:
        raise InputProblems([str(err)]) from None


def plan_splits(patterns, stream_column=None, threads=16) -> List[FileSplit]:
    """Check every file's columns and cut the input into splits, in a deterministic order."""
    return plan(patterns, RowSettings(stream_column=stream_column), threads).splits


def plan(patterns, settings: RowSettings, threads=16) -> InputPlan:
    """`plan_splits` under the run's settings (input format, column map, switches), with the
    columns left out and the warnings a person should see."""
    sizes = {}
    paths = expand(patterns, sizes)
    empty = [path for path in paths if sizes.get(path) == 0]
    warnings = tuple(f"{path}: the file is empty (0 bytes), usually a broken export; it holds no rows"
                     for path in empty)
    for warning in warnings:
        LOG.warning("%s", warning)
    paths = [path for path in paths if path not in empty]
    problems, infos = [], {}
    with concurrent.futures.ThreadPoolExecutor(min(threads, max(1, len(paths)))) as pool:
        futures = {path: pool.submit(_inspect, path, settings.csv_delimiter) for path in paths}
        for path, future in futures.items():
            try:
                infos[path] = future.result()
            except readers.InputFileError as err:
                problems.append(str(err))
            except OSError as err:
                problems.append(f"{path}: cannot be opened: {err}")
    dropped = set()
    for path in paths:
        if path in infos:
            problems.extend(readers.header_problems(infos[path], settings=settings))
            dropped.update(sources.plan_columns(infos[path].columns, settings).dropped)
    if problems:
        raise InputProblems(problems)
    splits = []
    for file_index, path in enumerate(paths):
        info = infos[path]
        if info.format == "parquet" and info.row_groups > PARQUET_ROW_GROUPS_PER_SPLIT:
            for first in range(0, info.row_groups, PARQUET_ROW_GROUPS_PER_SPLIT):
                groups = tuple(range(first, min(first + PARQUET_ROW_GROUPS_PER_SPLIT, info.row_groups)))
                splits.append(FileSplit(file_index, path, info.format, groups))
        elif info.columns:
            splits.append(FileSplit(file_index, path, info.format))
    return InputPlan(splits, tuple(sorted(dropped)), warnings)
