"""The streaming sender's pure rules: panes, the hour book, bodies and their keys."""
import json
import random

import numpy as np
import pytest

from anycost.bodies import hour_units
from anycost.inputs import hourly


def rendered(*starts_and_costs):
    rows = [b'{"time/usage_start":"%s","cost/cost":"%s"},' % (s.encode(), c.encode()) for s, c in starts_and_costs]
    return b"".join(rows), np.array([len(r) for r in rows], np.int32)


def pane(index, *rows, rejected=0, hour="2024-09-01T05:00:00Z", conn="c1"):
    data, lengths = rendered(*rows)
    return hour_units.HourPane(conn, hour, index, data, lengths.tobytes(), rejected)


def test_rows_split_by_the_hour_of_their_usage_start():
    data, lengths = rendered(("2024-09-01T05:10:00Z", "1"), ("2024-09-01T06:00:00Z", "2"),
                             ("2024-09-01T05:59:59.5Z", "3"))
    parts = dict(hour_units.split_by_hour(data, lengths))
    assert sorted(parts) == ["2024-09-01T05:00:00Z", "2024-09-01T06:00:00Z"]
    assert parts["2024-09-01T05:00:00Z"].rows.count(b"time/usage_start") == 2
    assert np.frombuffer(parts["2024-09-01T06:00:00Z"].lengths, np.int32).sum() == len(parts["2024-09-01T06:00:00Z"].rows)


def test_an_older_replace_hourly_pane_never_overwrites_a_newer_one():
    book = hour_units.HourBook("replace_hourly", 0, 3600)
    assert book.decide(pane(0, ("2024-09-01T05:00:00Z", "1"))) == (hour_units.SEND, None)
    assert book.decide(pane(2, ("2024-09-01T05:00:00Z", "1"))) == (hour_units.SEND, None)
    assert book.decide(pane(1, ("2024-09-01T05:00:00Z", "1")))[0] == hour_units.SUPERSEDED
    assert book.decide(pane(2, ("2024-09-01T05:00:00Z", "1")))[0] == hour_units.SUPERSEDED
    assert book.decide(pane(0, ("2024-09-01T06:00:00Z", "1"), hour="2024-09-01T06:00:00Z"))[0] == hour_units.SEND


def test_an_hour_over_the_reject_limit_is_held_and_stays_held():
    # replace_hourly panes hold the hour's rejects so far; sum panes only their own, which add up.
    for operation, later_rejects, total in (("replace_hourly", 2, 3), ("sum", 0, 2)):
        book = hour_units.HourBook(operation, 1, 3600)
        assert book.decide(pane(0, ("2024-09-01T05:00:00Z", "1"), rejected=1))[0] == hour_units.SEND
        action, reason = book.decide(pane(1, ("2024-09-01T05:00:00Z", "1"), rejected=later_rejects + 1))
        assert action == hour_units.HELD and f"has {total} rejected row(s)" in reason
        assert book.decide(pane(2, ("2024-09-01T05:00:00Z", "1"), rejected=later_rejects))[0] == hour_units.HELD
        other = pane(0, ("2024-09-01T06:00:00Z", "1"), hour="2024-09-01T06:00:00Z")
        assert book.decide(other)[0] == hour_units.SEND


def test_hours_are_forgotten_once_no_pane_can_come():
    book = hour_units.HourBook("replace_hourly", 0, 1800)
    book.decide(pane(0, ("2024-09-01T05:00:00Z", "1")))
    book.decide(pane(0, ("2024-09-01T06:00:00Z", "1"), hour="2024-09-01T06:00:00Z"))
    five = hourly.hour_seconds("2024-09-01T05:00:00Z")
    assert book.next_expiry() == five + 3600 + 1800 + 3600
    assert book.forget_expired(five + 3600 + 1800 + 3600) == five + 2 * 3600 + 1800 + 3600
    assert list(book.entries) == ["2024-09-01T06:00:00Z"]


def test_bodies_are_the_same_bytes_and_keys_whatever_the_row_order():
    rows = [("2024-09-01T05:%02d:00Z" % (i % 60), str(i)) for i in range(300)]
    reference = None
    for seed in range(3):
        random.Random(seed).shuffle(rows)
        bodies, refused = hour_units.pane_bodies(pane(3, *rows), "sum", 4000)
        assert refused is None and len(bodies) > 1
        got = [(b.body, b.idempotency_key) for b in bodies]
        reference = reference or got
        assert got == reference
    for body in bodies:
        assert len(body.body) <= 4000
        assert json.loads(body.body)["operation"] == "sum"
    assert sum(len(json.loads(b.body)["data"]) for b in bodies) == 300


def test_the_key_names_the_pane_so_identical_panes_are_two_deliveries():
    first, _ = hour_units.pane_bodies(pane(1, ("2024-09-01T05:00:00Z", "1")), "sum", 5000)
    second, _ = hour_units.pane_bodies(pane(2, ("2024-09-01T05:00:00Z", "1")), "sum", 5000)
    assert first[0].body == second[0].body and first[0].idempotency_key != second[0].idempotency_key


def test_a_replace_hourly_hour_must_fit_one_body():
    rows = [("2024-09-01T05:00:00Z", str(i)) for i in range(200)]
    bodies, refused = hour_units.pane_bodies(pane(0, *rows), "replace_hourly", 2000)
    assert bodies == [] and "do not fit in one body of 2000 bytes" in refused
    (body,), refused = hour_units.pane_bodies(pane(0, *rows), "replace_hourly", 50_000)
    assert refused is None and body.row_count == 200


def test_rows_that_do_not_open_with_their_usage_start_are_refused_not_misfiled():
    data = b'{"cost/cost":"1","time/usage_start":"2024-09-01T05:00:00Z"},'
    with pytest.raises(ValueError, match="open with their time/usage_start"):
        hour_units.split_by_hour(data, np.array([len(data)], np.int32))
