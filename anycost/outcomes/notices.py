"""Notices: what CloudZero will do quietly to rows that are valid, worded once for the log and the report."""
import re

from anycost import cbf


def resource_id_notice(count, example):
    """What CloudZero will do to `count` rows' resource/id, shown with `example`."""
    parts = re.split("[/:]", example)
    return (f"{count:,} row(s) have a {cbf.RESOURCE_ID} with more than two parts separated by / or :, "
            f"e.g. {example!r}; CloudZero keeps the type {parts[0]!r} and the name {parts[1]!r} "
            "and drops the rest")
