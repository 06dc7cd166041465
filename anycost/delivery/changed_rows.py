"""Refuse a `sum` month whose files were delivered before as other bodies.

Fix a rejected row and rerun, or change a file and rerun: the month's bodies change, so their
identities are new and the ledger does not skip them. With `sum`, sending them would add the
rows delivered the first time a second time. The ledger records which files each delivered
body's month came from; a month of this run that shares a file with a delivered body of the
same month that this run does not reproduce is refused before anything of it is sent. A new
file for a month already holding others (a daily export) shares no file, and is added as usual.
"""
from anycost.config import setting_value
from anycost.words import plural


def refusal(month, bodies, files, delivered_records, face):
    """Why the month's `bodies` (from `files`) may not be sent with `sum`, or None."""
    files = set(files)
    if not files or not bodies:
        return None
    earlier = [r for r in delivered_records
               if r.get("month") == month and r.get("operation") == "sum" and files & set(r.get("files") or ())]
    if not earlier:  # the common case: decided without building the bodies (they may be lazy)
        return None
    current = {body.idempotency_key for body in bodies}
    stale = [r for r in earlier if r.get("identity") not in current]
    if not stale:
        return None
    delivered_keys = {r.get("identity") for r in delivered_records}
    if all(body.idempotency_key in delivered_keys for body in bodies):
        return None  # nothing of this run would be sent
    rows = sum(int(r.get("rows") or 0) for r in stale)
    shared = sorted(files & {f for r in stale for f in r.get("files") or ()})
    return (f"{plural(len(stale), 'body', 'bodies')} of {month} ({plural(rows, 'row')}) from {', '.join(shared[:3])}"
            f"{'' if len(shared) <= 3 else f' and {len(shared) - 3} more files'} were delivered with sum by an "
            "earlier run on this ledger, and this run's rows of those files differ (a fixed rejected row, or a "
            "changed file); sending them with sum would add the earlier rows again. Nothing of this month was "
            f"sent. To make CloudZero hold exactly these files' rows, send the whole month with "
            f"{setting_value('operation', 'replace_drop', face)} (or replace_hourly for the hours the files hold)")
