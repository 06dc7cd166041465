"""AggregateHourly's rules, without Beam: which rows merge, and the merged row."""
import datetime as dt
import decimal
import random
from decimal import Decimal

import pytest

from anycost.inputs import hourly


def merge_all(rows):
    """Rows merged by key the way the transform does it, in the given order."""
    groups = {}
    for row in rows:
        key, partial = hourly.hour_key(row)
        groups.setdefault(key, []).append(partial)
    return sorted((hourly.merged_row(key, hourly.merge(parts)) for key, parts in groups.items()),
                  key=lambda r: sorted(map(str, r.items())))


def event(start, cost, **extra):
    return {"time/usage_start": start, "cost/cost": cost, "resource/service": "api", **extra}


def test_rows_of_one_hour_merge_with_exact_sums_of_mixed_types():
    rows = [event("2024-09-01T05:01:00Z", "0.1"), event("2024-09-01T05:59:59Z", 0.2),
            event(dt.datetime(2024, 9, 1, 5, 30), Decimal("0.3")), event("2024-09-01T07:30:00+02:00", 1)]
    (row,) = merge_all(rows)
    assert row == {"time/usage_start": "2024-09-01T05:00:00Z", "resource/service": "api",
                   "cost/cost": Decimal("1.6")}  # 0.1 + 0.2 + 0.3 + 1, exactly


def test_another_hour_another_value_or_another_connection_keeps_rows_apart():
    rows = [event("2024-09-01T05:00:00Z", "1"), event("2024-09-01T06:00:00Z", "1"),
            event("2024-09-01T05:00:00Z", "1", **{"resource/service": "db"}),
            event("2024-09-01T05:00:00Z", "1", connection="c2"),
            event("2024-09-01T05:10:00Z", "2", connection="c2")]
    merged = merge_all(rows)
    assert len(merged) == 4
    assert {"time/usage_start": "2024-09-01T05:00:00Z", "resource/service": "api", "connection": "c2",
            "cost/cost": Decimal("3")} in merged


def test_lineitem_ids_keep_rows_apart():
    rows = [event("2024-09-01T05:00:00Z", "1", **{"lineitem/id": "a"}),
            event("2024-09-01T05:10:00Z", "1", **{"lineitem/id": "b"})]
    assert len(merge_all(rows)) == 2


def test_usage_amount_and_every_cost_column_are_summed_and_a_missing_one_is_not_zero():
    rows = [event("2024-09-01T05:00:00Z", "1", **{"usage/amount": "2", "cost/discounted_cost": "0.5"}),
            event("2024-09-01T05:10:00Z", "1", **{"usage/amount": 3, "cost/discounted_cost": "0.25"}),
            event("2024-09-01T05:20:00Z", "1", **{"usage/amount": "1"})]  # no discounted cost
    merged = merge_all(rows)
    assert {"time/usage_start": "2024-09-01T05:00:00Z", "resource/service": "api", "cost/cost": Decimal("2"),
            "cost/discounted_cost": Decimal("0.75"), "usage/amount": Decimal("5")} in merged
    assert {"time/usage_start": "2024-09-01T05:00:00Z", "resource/service": "api", "cost/cost": Decimal("1"),
            "usage/amount": Decimal("1")} in merged


def test_usage_end_is_the_latest_and_does_not_keep_rows_apart():
    rows = [event("2024-09-01T05:00:00Z", "1", **{"time/usage_end": "2024-09-01T05:00:00.5Z"}),
            event("2024-09-01T05:10:00Z", "1", **{"time/usage_end": "2024-09-01T05:00:00Z"}),
            event("2024-09-01T05:20:00Z", "1")]
    (row,) = merge_all(rows)
    assert row["time/usage_end"] == "2024-09-01T05:00:00.5Z"


def test_sums_are_exact_for_many_tiny_and_huge_amounts_in_any_order():
    amounts = ["0.000000001", "123456789012345678901234567890.5", "-0.1", "1e-9", "0.3"] * 200
    with decimal.localcontext(decimal.Context(prec=100)):
        expected = sum((Decimal(a) for a in amounts), Decimal(0))
    assert str(expected) == "24691357802469135780246913578140.000000400"
    for seed in range(3):
        random.Random(seed).shuffle(amounts)
        (row,) = merge_all([event("2024-09-01T05:00:00Z", a) for a in amounts])
        assert row["cost/cost"] == expected


@pytest.mark.parametrize("row", [
    {"cost/cost": "1"},
    event("not a time", "1"),
    event("2024-09-01T05:00:00Z", "abc"),
    event("2024-09-01T05:00:00Z", float("nan")),
    event("2024-09-01T05:00:00Z", "1", **{"resource/region": True}),
    event("2024-09-01T05:00:00Z", "1", **{"resource/region": b"bytes"}),
])
def test_unreadable_rows_are_refused_with_a_reason(row):
    with pytest.raises(hourly.Unreadable):
        hourly.hour_key(row)


def test_the_key_is_one_deterministic_string_whatever_the_column_order():
    a = {"time/usage_start": "2024-09-01T05:00:00Z", "resource/id": "r", "cost/cost": "1", "resource/service": "s"}
    b = dict(reversed(list(a.items())))
    assert hourly.hour_key(a)[0] == hourly.hour_key(b)[0]
    assert isinstance(hourly.hour_key(a)[0], str)
    assert hourly.key_hour(hourly.hour_key(a)[0]) == "2024-09-01T05:00:00Z"


def test_too_late_counts_from_the_end_of_the_hour():
    start = hourly.hour_seconds("2024-09-01T05:00:00Z")
    assert not hourly.too_late("2024-09-01T05:00:00Z", start + 3600 + 600, 600)
    assert hourly.too_late("2024-09-01T05:00:00Z", start + 3600 + 601, 600)
