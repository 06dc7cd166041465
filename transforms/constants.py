"""Named values for `WriteToAnyCost(operation=...)` and `input_format=...`.

They are plain strings, so `operation="sum"` and `operation=Operation.SUM` are the same
setting, compare equal and go to JSON as the same text.
"""
from anycost import cbf, config


class Operation:
    """What CloudZero does with a month's rows."""
    SUM = "sum"  # add the rows to the month
    REPLACE_HOURLY = "replace_hourly"  # replace the UTC hours the rows cover
    REPLACE_DROP = "replace_drop"  # replace the whole month (bounded input only)
    ALL = cbf.OPERATIONS


class InputFormat:
    """How the columns of the input are named."""
    CBF = "cbf"  # Common Bill Format columns: time/usage_start, cost/cost, ...
    FOCUS = "focus"  # FinOps FOCUS 1.0-1.2 columns, mapped to CBF
    ALL = config.INPUT_FORMATS
