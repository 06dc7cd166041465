"""Resolve a body in doubt against CloudZero's listing of drops, soundly.

A body is in doubt when an attempt under its key may have been applied (the answer was lost,
or the run was killed while a request was out). It keeps that key, because a new key could
apply it a second time. If the key's first answer was an error, CloudZero replays that error
for good, and the body would be stuck. The listing (`GET .../billing_drops`: each drop's id,
month and row count) settles it:

- the ledger keeps the drop ids the connection held before this ledger's runs sent anything
  (`seen`, listed when no body was in doubt) and the drop id of every body it delivered;
- a listed drop of the body's month that is in neither is unaccounted: only a body in doubt
  can have made it (assumption: the connection has no writer outside this ledger, and
  CloudZero has finished any request sent `settle` seconds ago);
- no unaccounted drop: nothing in doubt was applied, so the body may take its next key;
- one unaccounted drop, with the body's row count, while this is the only body in doubt:
  it is this body, applied; the ledger records it as delivered with that drop id;
- anything else cannot be decided here, and the answer says what to check.
"""
import dataclasses
from typing import Iterable, Optional
from anycost.words import plural

APPLIED, NOT_APPLIED, UNDECIDED = "applied", "not_applied", "undecided"


@dataclasses.dataclass(frozen=True)
class Verdict:
    kind: str
    drop_id: Optional[str] = None
    reason: str = ""


def unaccounted(listed: Iterable[dict], month, seen, delivered_ids):
    """The listed drops of `month` that neither predate the ledger nor are its deliveries."""
    known = set(seen) | set(delivered_ids)
    return [drop for drop in listed if str(drop.get("month", ""))[:7] == month
            and str(drop.get("drop_id")) not in known]


def decide(body, listed, seen, delivered_ids, bodies_in_doubt=1, unidentified_deliveries=0) -> Verdict:
    """Whether `body` (in doubt) was applied, from the connection's listing `listed`.

    `seen`: drop ids listed before the ledger's runs sent anything (None: never listed, so no
    drop can be told apart). `delivered_ids`: drop ids of the bodies the ledger records as
    delivered; `unidentified_deliveries` of them had no drop id in CloudZero's answer.
    `bodies_in_doubt`: how many bodies of the connection are in doubt, this one included."""
    what = f"{body.describe()} ({plural(body.row_count, 'row')}) was in doubt: an attempt under its key may have been applied"
    if seen is None:
        return Verdict(UNDECIDED, reason=(
            f"{what}, and the ledger holds no listing of the drops made before it, so CloudZero's listing "
            "cannot tell whether it was"))
    extra = unaccounted(listed, body.month, seen, delivered_ids)
    if not extra:
        if unidentified_deliveries:
            return Verdict(UNDECIDED, reason=(
                f"{what}; {unidentified_deliveries} delivered bodies have no drop id in the ledger, so "
                "CloudZero's listing cannot be checked against it"))
        return Verdict(NOT_APPLIED, reason=(
            f"{what}; CloudZero lists no drop of {body.month} that the ledger does not account for, "
            "so it was not applied"))
    if len(extra) == 1 and bodies_in_doubt == 1 and not unidentified_deliveries \
            and _rows(extra[0]) == body.row_count:
        drop_id = str(extra[0].get("drop_id"))
        return Verdict(APPLIED, drop_id=drop_id, reason=(
            f"{what}; CloudZero lists drop {drop_id} of {body.month} with its {plural(body.row_count, 'row')}, which "
            "no other body of the ledger made, so it was applied"))
    listing = ", ".join(f"{d.get('drop_id')} ({plural(_rows(d), 'row')})" for d in extra[:10])
    return Verdict(UNDECIDED, reason=(
        f"{what}; CloudZero lists drops of {body.month} that the ledger does not account for: {listing}"
        f"{'' if len(extra) <= 10 else f' and {len(extra) - 10} more'}, with {plural(bodies_in_doubt, 'body', 'bodies')} in "
        "doubt, so which of them it made cannot be told"))


def _rows(drop):
    try:
        return int(drop.get("row_count") or 0)
    except (TypeError, ValueError):
        return -1
