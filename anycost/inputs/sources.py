"""From a source file's columns to CBF columns: the column map, FOCUS, unknown columns and
tag keys, decided once per header and applied to every record batch.

`plan_columns` decides from a header alone: the launcher uses it to stop a run before it
starts (exit 3) and to list the columns left out; the reader uses it to skip Parquet
columns nobody needs. `prepare` applies the same decisions to a batch, and
`normalise_batch` then validates it (`anycost.inputs.normalise`) and puts the refused rows in the
dead letter with the source row as it was. No Beam, no HTTP.
"""
import collections
import dataclasses
import json
from typing import Dict, Tuple

import numpy as np
import pyarrow as pa

from anycost import cbf
from anycost.inputs import focus, normalise, tags
from anycost.config import RowSettings
from anycost.inputs import dead_letter

CBF, FOCUS = "cbf", "focus"
INPUT_FORMATS = (CBF, FOCUS)
UNKNOWN_COLUMNS = ("refuse", "drop")
TAG_KEYS = ("refuse", "sanitize")


class ColumnMapError(ValueError):
    """A --column_map file that is not a JSON object of column names."""


def parse_column_map(text, name="--column_map"):
    """The JSON object `{"source column": "target column", ...}` as sorted pairs."""
    try:
        mapping = json.loads(text)
    except ValueError as err:
        raise ColumnMapError(f"{name} is not valid JSON: {err}") from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in mapping.items()):
        raise ColumnMapError(f"{name} must be a JSON object mapping column names to column names, "
                             'like {"usage_date": "time/usage_start"}')
    targets = collections.defaultdict(list)
    for source, target in mapping.items():
        targets[target].append(source)
    twice = {t: s for t, s in targets.items() if len(s) > 1}
    if twice:
        target, sources = sorted(twice.items())[0]
        raise ColumnMapError(f"{name} maps {', '.join(map(repr, sorted(sources)))} to the same column "
                             f"{target!r}; one column can come from one source column only")
    return tuple(sorted(mapping.items()))


@dataclasses.dataclass(frozen=True)
class ColumnPlan:
    targets: Dict[str, str]  # source column -> its name after the column map, for columns read
    dropped: Tuple[str, ...]  # source columns left out
    problems: Tuple[str, ...]  # reasons the run must stop (without the file's name)


def plan_columns(names, settings: RowSettings) -> ColumnPlan:
    """Which of a header's columns are read, under which name, and what is wrong with it."""
    mapping = dict(settings.column_map)
    problems = [f"--column_map names column {source!r}, which the file does not have"
                for source in mapping if source not in names]
    targets, dropped = {}, []
    for source in names:
        target = mapping.get(source, source)
        problem = _column_problem(target, settings)
        if problem is None:
            targets[source] = target
        elif problem == "drop":
            dropped.append(source)
        else:
            renamed = f" (--column_map renames {source!r})" if source != target else ""
            problems.append(problem + renamed)
    by_target = collections.defaultdict(list)
    for source, target in targets.items():
        by_target[target].append(source)
    for target, sources in by_target.items():
        if len(sources) > 1:
            problems.append(f"columns {', '.join(map(repr, sources))} would all become {target!r}")
    if settings.input_format == FOCUS:
        present = set(targets.values())
        problems += [f"has no {name!r} column, which FOCUS requires (is this a FOCUS file?)"
                     for name in focus.REQUIRED_COLUMNS if name not in present]
        for focus_name, cbf_name in focus.MAPPING:
            if cbf_name in present and focus_name in present:
                problems.append(f"column {cbf_name!r} would be filled twice: from the column of that name "
                                f"and from FOCUS column {focus_name!r}")
    return ColumnPlan(targets, tuple(dropped), tuple(problems))


def _column_problem(target, settings):
    """None when the column is read, "drop" when it is left out, else why the run stops."""
    if target == settings.stream_column or cbf.is_cbf_column(target):
        return None
    if settings.input_format == FOCUS:
        return None if target in focus.USED_COLUMNS else "drop"
    if cbf.is_tag_column(target) and settings.tag_keys == "sanitize":
        return None if cbf.sanitize_tag_key(target[len(cbf.TAG_PREFIX):]) else "drop"
    if settings.unknown_columns == "drop":
        return "drop"
    problem = cbf.column_problem(target)
    if not cbf.is_tag_column(target) and cbf.meant_column(target) is None:
        problem += "; --unknown_columns drop leaves such columns out"
    return problem


def reader_options(settings: RowSettings):
    """Keyword arguments for `readers.read_batches`: the delimiter, and the Parquet columns to read."""
    def select(names):
        return list(plan_columns(names, settings).targets)
    return {"delimiter": settings.csv_delimiter, "select": select,
            "keep_nested": settings.input_format == FOCUS}


@dataclasses.dataclass
class Prepared:
    """A batch as CBF columns, with rows refused before validation and the rules' counts."""
    batch: pa.RecordBatch
    refused: np.ndarray
    reasons: np.ndarray
    counts: Dict[str, int]


def prepare(batch: pa.RecordBatch, settings: RowSettings) -> Prepared:
    """Rename, map FOCUS, drop and sanitise, as `plan_columns` decided for this header."""
    plan = plan_columns(batch.schema.names, settings)
    fields = [batch.schema.field(s).with_name(t) for s, t in plan.targets.items()]
    renamed = pa.RecordBatch.from_arrays([batch.column(s) for s in plan.targets], schema=pa.schema(fields))
    n = batch.num_rows
    if settings.input_format == FOCUS:
        mapped = focus.to_cbf(renamed, settings.currency, settings.tag_keys)
        result = mapped.batch
        if settings.stream_column and settings.stream_column in renamed.schema.names:
            stream = renamed.schema.get_field_index(settings.stream_column)
            result = result.append_column(renamed.schema.field(stream), renamed.column(stream))
        return Prepared(result, mapped.refused, mapped.reasons, mapped.counts)
    counts = {}
    if settings.tag_keys == "sanitize":
        renamed, counts = _sanitise_tag_columns(renamed)
    return Prepared(renamed, np.zeros(n, bool), np.empty(n, object), counts)


def _sanitise_tag_columns(batch):
    """CBF tag columns under sanitised keys; keys that become one key merge by tags' rule."""
    names = batch.schema.names
    tag_names = [name for name in names if cbf.is_tag_column(name)]
    if all(cbf.is_valid_tag_column(name) for name in tag_names):
        return batch, {}
    merged = tags.merge_keys({name[len(cbf.TAG_PREFIX):]: batch.column(name) for name in tag_names},
                             batch.num_rows, sanitize=True)
    others = [name for name in names if not cbf.is_tag_column(name)]
    columns = [batch.column(name) for name in others] + list(merged.columns.values())
    fields = [batch.schema.field(name) for name in others] + [pa.field(n, pa.string()) for n in merged.columns]
    counts = {name: int(mask.sum()) for name, mask in merged.flags.items() if mask.any()}
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields)), counts


def normalise_batch(batch: pa.RecordBatch, source: normalise.SourceBatch, settings: RowSettings):
    """`prepare`, then `normalise.normalise_batch`; returns (NormalisedBatch, rule counts).

    Rejected rows carry the source row as it was in the file (FOCUS names, not CBF)."""
    prepared = prepare(batch, settings)
    good, kept_source, rejects = prepared.batch, source, []
    if prepared.refused.any():
        rejects = [dead_letter.reject_record(source.file, int(source.row_numbers[i]), prepared.reasons[i],
                                           _original_row(batch, i)) for i in np.flatnonzero(prepared.refused)]
        keep = ~prepared.refused
        good = good.filter(pa.array(keep))
        kept_source = dataclasses.replace(source, row_numbers=source.row_numbers[keep])
    result = normalise.normalise_batch(good, kept_source, settings)
    if result.rejects and settings.input_format == FOCUS:
        position = {int(row): i for i, row in enumerate(source.row_numbers)}
        for record in result.rejects:
            record["values"] = _original_row(batch, position[record["row"]])
    result.rejects = rejects + result.rejects
    result.rows_in = batch.num_rows
    return result, prepared.counts


def _original_row(batch, position):
    row = batch.slice(int(position), 1).to_pylist()[0]
    kept = {name: value for name, value in row.items() if value is not None and value != ""}
    return json.loads(json.dumps(kept, default=str, ensure_ascii=False))
