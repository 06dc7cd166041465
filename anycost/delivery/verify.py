"""Compare what CloudZero holds for a stream-month with what the input says.

`--verify` reads each touched month back after the upload, `--verify_only` without
uploading. The check is the row count and the exact `Decimal` total of `cost/cost`.
With `sum`, rows other runs put into the same month count too: verify is exact only
when this input is the month's only source. No Beam, no HTTP.
"""
from anycost.inputs import values

MATCH, MISMATCH, MISSING, ERROR = "match", "mismatch", "missing", "error"


def check(summary, outcome, reason=""):
    """A verification record for one stream-month, from the GET outcome."""
    record = {
        "connection_id": summary.connection_id, "month": summary.month,
        "expected_rows": summary.row_count, "expected_cost": summary.cost_total,
        "actual_rows": 0, "actual_cost": "0",
    }
    if outcome.status == 404:
        return dict(record, status=MISSING, message=f"CloudZero holds nothing for {summary.month}")
    if not outcome.ok:
        return dict(record, status=ERROR, message=f"could not read the month back: {reason}")
    rows = (outcome.payload or {}).get("billing_drop")
    if not isinstance(rows, list):
        return dict(record, status=ERROR, message="the answer has no billing_drop list")
    try:
        total = values.exact_sum(row.get("cost/cost", "0") for row in rows)
    except Exception:  # a value CloudZero returned that is not a decimal
        return dict(record, status=ERROR, message="the month holds a cost that is not a decimal")
    record.update(actual_rows=len(rows), actual_cost=values.decimal_text(total))
    same = len(rows) == summary.row_count and total == values.exact_sum([summary.cost_total])
    if same:
        return dict(record, status=MATCH, message="")
    return dict(record, status=MISMATCH,
                message=(f"CloudZero holds {len(rows)} rows costing {record['actual_cost']}; "
                         f"the input has {summary.row_count} rows costing {summary.cost_total}"))
