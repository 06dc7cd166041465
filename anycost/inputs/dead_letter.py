"""The dead letter's format: one JSON line per rejected row, naming its file, row and reason.

Every reader and validator builds its records here, so that the file a person opens to fix
their rows always reads the same. No Beam, no HTTP.
"""
import json


def reject_record(file, row, reason, original):
    """One dead-letter line: where the row was, why it was refused, and what it held."""
    return {"file": file, "row": row, "reason": reason, "values": original}


def dumps_reject(record):
    """A dead-letter record as one JSON line (non-ASCII kept readable)."""
    return json.dumps(record, ensure_ascii=False, sort_keys=False)
