"""Stream CBF files as Arrow record batches of text, never a whole file at once.

`inspect` reads only a file's header or Parquet footer, so that the launcher can refuse
unknown columns before the pipeline starts. `read_batches` streams the rows. Both take an
open binary file object, so the caller decides where files live (local, `gs://`).
No Beam, no HTTP.
"""
import codecs
import csv
import dataclasses
import gzip
import io
import re
import zlib
from typing import Iterator, List, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from anycost import cbf
from anycost.inputs import focus, normalise, sources, tags, typed_text
from anycost.config import RowSettings
from anycost.inputs.dead_letter import reject_record

CSV_BLOCK_BYTES = 16 << 20  # must exceed the largest row; a 5 MB body bounds useful rows
PARQUET_BATCH_ROWS = 65_536
FORMATS = {".csv": "csv", ".csv.gz": "csv.gz", ".parquet": "parquet"}
_BOM = b"\xef\xbb\xbf"


class InputFileError(Exception):
    """A file that cannot be read as CBF; the message names the file and says why."""


def file_format(path):
    """`csv`, `csv.gz` or `parquet`, from the name; None for anything else."""
    lowered = path.lower()
    for suffix in (".csv.gz", ".csv", ".parquet"):
        if lowered.endswith(suffix):
            return FORMATS[suffix]
    return None


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """What the launcher learns from a header or footer, before any row is read."""
    path: str
    format: str
    columns: List[str]
    row_groups: int = 0  # Parquet only: lets the pipeline split a big file
    arrow_types: Tuple = ()  # Parquet only: (name, Arrow type) per column, checked by header_problems


@dataclasses.dataclass
class TextBatch:
    """Rows of one file as text columns, with each row's 1-based number in the file."""
    batch: pa.RecordBatch
    row_numbers: np.ndarray
    rejects: list  # rows the parser itself refused (ragged rows, invalid UTF-8)


def inspect(fileobj, path, fmt, delimiter=",") -> FileInfo:
    """Read only the header (CSV) or footer (Parquet); `header_problems` judges them."""
    try:
        if fmt == "parquet":
            parquet = pq.ParquetFile(fileobj)
            schema = parquet.schema_arrow
            return FileInfo(path, fmt, list(schema.names), parquet.num_row_groups,
                            tuple((field.name, field.type) for field in schema))
        names, _, _ = _peek_csv_header(_open_text_stream(fileobj, fmt), path, delimiter)
        return FileInfo(path, fmt, names)
    except InputFileError:
        raise
    except (pa.ArrowException, OSError, EOFError, zlib.error, ValueError) as err:
        raise InputFileError(f"{path}: cannot be read as {fmt}: {_short(err)}") from None


_DELIMITERS = ((";", "';'", "';'"), ("\t", "a tab", "tab"), ("|", "'|'", "'|'"), (",", "','", "','"))


def header_problems(info: FileInfo, stream_column=None, settings=None):
    """Every reason the file's columns stop the run, one message each.

    `settings` (anycost.RowSettings) carries the input format, the column map and
    the unknown-column and tag-key switches; see anycost.inputs.sources.plan_columns."""
    settings = settings or RowSettings()
    if stream_column and not settings.stream_column:
        settings = dataclasses.replace(settings, stream_column=stream_column)
    stream_column = settings.stream_column
    if len(info.columns) == 1 and info.format != "parquet":
        for delimiter, label, flag in _DELIMITERS:
            if delimiter != settings.csv_delimiter and delimiter in info.columns[0]:
                return [f"{info.path}: the header is one column, {info.columns[0][:80]!r}, holding {label}: "
                        f"the file looks delimited by {label}; give --csv_delimiter {flag}"]
    problems = []
    seen = set()
    for name in info.columns:
        if name in seen:
            problems.append(f"{info.path}: column {name!r} appears more than once in the header")
        seen.add(name)
    plan = sources.plan_columns(info.columns, settings)
    problems += [f"{info.path}: {problem}" for problem in plan.problems]
    for name, arrow_type in info.arrow_types:
        if name in plan.targets:
            is_tags = settings.input_format == sources.FOCUS and plan.targets[name] == focus.TAGS
            problem = (tags.type_problem if is_tags else typed_text.type_problem)(arrow_type)
            if problem:
                problems.append(f"{info.path}: column {name!r} {problem}")
    if stream_column and stream_column not in plan.targets.values() and info.columns:
        problems.append(f"{info.path}: has no {stream_column!r} column (named by --stream_column)")
    if (settings.input_format == sources.CBF and focus.looks_like_focus(info.columns)
            and (problems or cbf.USAGE_START not in plan.targets.values())):
        problems.append(f"{info.path}: the header looks like a FOCUS export (ChargePeriodStart, BilledCost, ...); "
                        "add --input_format focus")
    elif (settings.input_format == sources.CBF and info.columns and problems
          and not {cbf.USAGE_START, cbf.COST} & {cbf.meant_column(name) or name for name in seen}):
        problems.append(f"{info.path}: the first line does not look like a CBF header; is the header missing?")
    return problems


def read_batches(fileobj, path, fmt, row_groups=None, delimiter=",", select=None,
                 keep_nested=False) -> Iterator[TextBatch]:
    """Yield the file's rows as text batches; a file that breaks mid-way raises InputFileError.

    Parquet only: `select(names)` names the columns to read (the others are never
    decoded), and `keep_nested` passes map, struct and list columns through as they are
    (a FOCUS Tags column) instead of refusing them."""
    try:
        if fmt == "parquet":
            yield from _parquet_batches(fileobj, path, row_groups, select, keep_nested)
        else:
            yield from _csv_batches(_open_text_stream(fileobj, fmt), path, delimiter)
    except InputFileError:
        raise
    except (pa.ArrowException, OSError, EOFError, zlib.error, ValueError) as err:
        if "straddling" in str(err):  # Arrow's words for a row longer than one read block
            raise InputFileError(f"{path}: a row is longer than {CSV_BLOCK_BYTES >> 20} MB, more than "
                                 "any 5 MB body can hold; reading stopped there") from None
        raise InputFileError(f"{path}: reading stopped part-way: {_short(err)}") from None


def _short(err):
    return str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__


def _open_text_stream(fileobj, fmt):
    return gzip.GzipFile(fileobj=fileobj, mode="rb") if fmt == "csv.gz" else fileobj


def _parquet_batches(fileobj, path, row_groups, select=None, keep_nested=False):
    parquet = pq.ParquetFile(fileobj)
    columns = select(parquet.schema_arrow.names) if select else None
    sizes = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
    groups = list(range(parquet.num_row_groups)) if row_groups is None else list(row_groups)
    if not groups:
        return
    # Batches may span row groups, and the groups asked for need not be contiguous: number
    # every selected row by its group's first row in the file, in the order they are read.
    starts = 1 + np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])
    numbers = np.concatenate([np.arange(starts[g], starts[g] + sizes[g], dtype=np.int64) for g in groups])
    position = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups, columns=columns,
                                      use_threads=False):
        try:
            text = _as_text_batch(batch, keep_nested)
        except typed_text.UnsupportedColumnType:
            problems = [f"column {field.name!r} {typed_text.type_problem(field.type)}"
                        for field in batch.schema if typed_text.type_problem(field.type)]
            raise InputFileError(f"{path}: {'; '.join(problems)}") from None
        yield TextBatch(text, numbers[position:position + batch.num_rows], [])
        position += batch.num_rows


def _as_text_batch(batch, keep_nested):
    """Typed columns as CBF text, their kind in the field metadata; with `keep_nested`,
    map, struct and list columns pass as they are (anycost.inputs.tags reads them)."""
    arrays, fields = [], []
    for field, column in zip(batch.schema, batch.columns):
        if keep_nested and pa.types.is_nested(column.type):
            arrays.append(column)
            fields.append(pa.field(field.name, column.type))
            continue
        text, kind = typed_text.text_and_kind(column)
        arrays.append(text)
        fields.append(pa.field(field.name, pa.string(), metadata={typed_text.KIND_KEY: kind} if kind else None))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


class _CsvRowNumbers:
    """Numbers the good rows of a CSV around the ones the parser skipped.

    Arrow reports a skipped row by its record number, so a good row's number is the next
    record number that was not skipped.
    """

    def __init__(self, header_records=1):
        self.skipped = []  # record numbers (header included) of skipped rows
        self.next_record = header_records + 1
        self.header_records = header_records

    def assign(self, count):
        skipped = np.array(sorted(r for r in self.skipped if r >= self.next_record), np.int64)
        candidates = np.arange(self.next_record, self.next_record + count + len(skipped), dtype=np.int64)
        good = np.setdiff1d(candidates, skipped, assume_unique=True)[:count]
        if count:
            self.next_record = int(good[-1]) + 1
        return good - self.header_records


def _csv_batches(stream, path, delimiter=","):
    names, stream, checked = _peek_csv_header(stream, path, delimiter)
    if not names:
        return
    if len(set(names)) != len(names):
        raise InputFileError(f"{path}: the header repeats a column name")
    numbers = _CsvRowNumbers()
    parser_rejects = []

    def on_invalid_row(row):
        numbers.skipped.append(row.number)
        reason = (f"the row has {row.actual_columns} fields where the header has "
                  f"{row.expected_columns}")
        parser_rejects.append(reject_record(path, row.number - 1, reason, {"text": unmark(row.text)}))
        return "skip"

    reader = pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True,
                                         invalid_row_handler=on_invalid_row),
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.string() for name in names}, strings_can_be_null=False),
    )
    for batch in reader:
        if batch.schema.names != names or any(t != pa.string() for t in batch.schema.types):
            # The header was read differently from how it was peeked (a quoted line break in
            # a column name, say): the columns would not all be text, so refuse the file.
            raise InputFileError(f"{path}: the header could not be read consistently "
                                 f"(Arrow found columns {batch.schema.names[:20]})")
        row_numbers = numbers.assign(batch.num_rows)
        if checked.found_invalid:  # the stream has marked bytes somewhere: find their rows
            batch, keep, utf8_rejects = _reject_invalid_utf8(batch, path, row_numbers)
            row_numbers = row_numbers[keep]
        else:
            utf8_rejects = []
        rejects, parser_rejects[:] = parser_rejects + utf8_rejects, []
        yield TextBatch(batch, row_numbers, rejects)
    if parser_rejects:
        yield TextBatch(pa.RecordBatch.from_arrays([pa.array([], pa.string())] * len(names), names=names),
                        np.zeros(0, np.int64), list(parser_rejects))


def _peek_csv_header(stream, path, delimiter=","):
    """The header's fields (quoted names allowed, BOM removed), a stream that still starts
    at the header, so that Arrow can read every column as text, never inferred, and the
    `_CheckedText` under that stream."""
    data = stream.read(1 << 20)
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    checked = _CheckedText(data, stream)
    rest = io.BufferedReader(checked, CSV_BLOCK_BYTES)
    if not data.strip():
        return [], rest, checked
    line = re.split(rb"\r\n|\r|\n", data, maxsplit=1)[0]  # Arrow also ends a line at a lone CR
    try:
        names = next(csv.reader([line.decode("utf-8")], delimiter=delimiter))
    except UnicodeDecodeError as err:
        raise InputFileError(f"{path}: the header is not valid UTF-8 (byte {err.start})") from None
    except csv.Error as err:
        raise InputFileError(f"{path}: the header cannot be read as CSV: {err}") from None
    return names, rest, checked


def _reject_invalid_utf8(batch, path, row_numbers):
    """Rows holding bytes that were not UTF-8 become rejects naming the column.

    Returns the good rows, the mask of rows kept, and the rejects."""
    bad = np.zeros(batch.num_rows, bool)
    reasons = {}
    for name, column in zip(batch.schema.names, batch.columns):
        marked = pc.fill_null(pc.match_substring_regex(column, _MARKED), False).to_numpy(zero_copy_only=False)
        for position in np.flatnonzero(marked):
            bad[position] = True
            reasons.setdefault(position, []).append(f"{name} is not valid UTF-8")
    if not bad.any():
        return batch, ~bad, []
    rejects = []
    for position in np.flatnonzero(bad):
        original = {name: unmark(value) for name, value in batch.slice(position, 1).to_pylist()[0].items() if value}
        rejects.append(reject_record(path, int(row_numbers[position]), "; ".join(reasons[position]), original))
    return batch.filter(pa.array(~bad)), ~bad, rejects


# A byte that is not part of valid UTF-8 travels as a private-use code point of plane 16
# (U+10FF80..U+10FFFF, one per byte value), so Arrow always gets valid text and the row can
# be rejected with its column named, instead of the whole file failing.
_MARK_BASE = 0x10FF00
_MARKED = "[\U0010FF80-\U0010FFFF]"


def _mark_invalid_bytes(err):
    return "".join(chr(_MARK_BASE + byte) for byte in err.object[err.start:err.end]), err.end


codecs.register_error("cbf-mark-invalid-utf8", _mark_invalid_bytes)


def unmark(text):
    """Marked bytes back as `\\xNN`, for a person to read in the dead letter."""
    return re.sub(_MARKED, lambda m: "\\x%02x" % (ord(m.group()) - _MARK_BASE), text)


class _CheckedText(io.RawIOBase):
    """The peeked `head`, then the rest of `stream`, as valid UTF-8 with a final line break.

    Valid input passes through as it is (one decoding pass checks it). Invalid bytes are
    marked (see `_mark_invalid_bytes`). A final line break is added when the file lacks one:
    Arrow refuses a header-only file without it, and it changes nothing else."""

    def __init__(self, head, stream):
        self._pending, self._stream = head, stream
        self._carry = b""  # an incomplete multi-byte sequence at the end of the last chunk
        self._out = b""
        self._last = b"\n"  # nothing read yet: an empty file stays empty
        self._eof = False
        self.found_invalid = False  # set once any byte had to be marked

    def readable(self):
        return True

    def _refill(self):
        raw = self._pending or self._stream.read(CSV_BLOCK_BYTES)
        self._pending = b""
        final = not raw
        data = self._carry + raw
        try:
            _, consumed = codecs.utf_8_decode(data, "strict", final)
            out = data[:consumed]
        except UnicodeDecodeError:
            text, consumed = codecs.utf_8_decode(data, "cbf-mark-invalid-utf8", final)
            out = text.encode("utf-8")
            self.found_invalid = True
        self._carry = data[consumed:]
        if final:
            self._eof = True
            if (out[-1:] or self._last) not in (b"\n", b"\r"):
                out += b"\n"
        self._out = out

    def readinto(self, buffer):
        while not self._out and not self._eof:
            self._refill()
        size = min(len(buffer), len(self._out))
        buffer[:size] = self._out[:size]
        if size:
            self._last = self._out[size - 1:size]
        self._out = self._out[size:]
        return size
