"""Why rows were rejected, in a few lines: the most frequent reasons, each with its count and
one example (file, row, the offending value), for the end of the run.

The dead letter holds every rejected row; this keeps only a count and one example per kind
of reason, in accumulators that merge, so the pipeline counts them with a combine and no
machine needs all the rejects in memory. No Beam, no HTTP.
"""
import re

TOP = 5
MAX_KINDS = 1000  # more distinct kinds than this are counted together as "other reasons"
OTHER = "other reasons"
VALUE_CHARS = 80

_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_SIZE = re.compile(r"(?<![\w/:.])\d{4,}(?![\w.])")  # byte counts and such, which differ row by row


def reason_kind(reason):
    """The reason without its particular values, so that rows refused for the same rule count
    together: "cost/cost: 'abc' is not a decimal number" -> "cost/cost: '…' is not a decimal number",
    "the row is 5000123 bytes" -> "the row is N bytes"."""
    return _SIZE.sub("N", _QUOTED.sub("'…'", reason))


def offending_value(values, reason):
    """(column, value) the reason is about: the column it starts with; a row the parser
    refused has only its text. (None, None) when the reason names no column of the row."""
    names = [name for name in values if reason.startswith(name)]
    if not names:
        return (None, None)
    name = max(names, key=len)
    value = str(values[name])
    if len(value) > VALUE_CHARS:
        value = value[:VALUE_CHARS] + "..."
    return name, value


def empty():
    return {}


def add(tally, record):
    """Count one dead-letter record ({"file", "row", "reason", "values"}) under each of its
    reasons; the example kept for a kind is its first row in (file, row) order."""
    for reason in str(record.get("reason", "")).split("; "):
        kind = reason_kind(reason)
        if kind not in tally and len(tally) >= MAX_KINDS:
            kind = OTHER
        column, value = offending_value(record.get("values") or {}, reason)
        example = {"file": record.get("file"), "row": record.get("row"), "reason": reason,
                   "column": column, "value": value}
        _count(tally, kind, 1, example)
    return tally


def merge(tallies):
    merged = empty()
    for tally in tallies:
        for kind, (count, example) in tally.items():
            if kind not in merged and len(merged) >= MAX_KINDS:
                kind = OTHER
            _count(merged, kind, count, example)
    return merged


def top(tally, limit=TOP):
    """The `limit` most frequent reasons: [{"reason", "count", "example"}], most frequent
    first, ties in the order of the reason's text; the rest summed as "other reasons"."""
    ranked = sorted(tally.items(), key=lambda item: (item[0] == OTHER, -item[1][0], item[0]))
    shown = [{"reason": kind, "count": count, "example": example}
             for kind, (count, example) in ranked[:limit]]
    rest = sum(count for _, (count, _) in ranked[limit:])
    if rest:
        shown.append({"reason": OTHER, "count": rest, "example": None})
    return shown


def _count(tally, kind, count, example):
    if kind in tally:
        old_count, old_example = tally[kind]
        tally[kind] = [old_count + count, min(old_example, example, key=_position)]
    else:
        tally[kind] = [count, example]


def _position(example):
    return (str(example["file"]), example["row"] if isinstance(example["row"], int) else -1)
