"""anycost.delivery.ledger.RunState on tmp_path: the ledger that makes reruns resume, not repeat."""
import json
import os

import pytest

from anycost.bodies.packing import PlannedBody, idempotency_key
from anycost.delivery.ledger import ConnectionLedger, RunState


def body(seq=1, month="2024-08", connection="conn", data=b"x", operation="sum"):
    raw = b'{"month":"%s","operation":"%s","data":[%s]}' % (month.encode(), operation.encode(), data)
    return PlannedBody(connection, month, operation, seq, 3, 1, raw, idempotency_key(connection, month, operation,
                                                                                       seq, raw))


def test_an_empty_or_missing_state_knows_nothing(tmp_path):
    state = RunState(str(tmp_path / "never-written"))
    assert state.load("conn") == ConnectionLedger()
    assert state.delivered_keys("conn") == set() and state.progress(body()) is None


def test_a_delivered_body_is_recorded_under_its_identity_with_the_accepted_generation(tmp_path):
    state, first = RunState(str(tmp_path)), body()
    state.record(first, "drop-9", attempts=3, generation=2)
    path = state.record_path(first)
    assert path == os.path.join(str(tmp_path), "conn", "2024-08", first.idempotency_key + ".json")
    with open(path) as handle:
        record = json.load(handle)
    assert record["identity"] == first.idempotency_key and record["generation"] == 2
    assert record["idempotency_key"] == first.key_for(2) != first.idempotency_key
    assert (record["connection_id"], record["month"], record["operation"], record["seq"]) == ("conn", "2024-08",
                                                                                               "sum", 1)
    assert (record["drop_id"], record["attempts"], record["rows"], record["bytes"]) == ("drop-9", 3, 1,
                                                                                        len(first.body))
    ledger = state.load("conn")
    assert ledger.is_delivered(first) and not ledger.has_progress(first)


@pytest.mark.parametrize("generation", [0, 1, 7])
def test_a_rerun_skips_a_body_whichever_generation_was_accepted(tmp_path, generation):
    RunState(str(tmp_path)).record(body(), None, 1, generation)
    assert RunState(str(tmp_path)).load("conn").is_delivered(body())  # a new process, the same answer


def test_identity_tells_bodies_apart(tmp_path):
    state = RunState(str(tmp_path))
    state.record(body(seq=1), None, 1)
    ledger = state.load("conn")
    for other in (body(seq=2), body(data=b"y"), body(month="2024-09"), body(operation="replace_hourly"),
                  body(connection="other")):
        assert not ledger.is_delivered(other)
    assert not state.load("other").is_delivered(body(connection="other"))


def test_progress_is_written_ahead_and_read_back(tmp_path):
    state, first = RunState(str(tmp_path)), body()
    state.record_progress(first, 0, True)
    assert state.load("conn").has_progress(first) and not state.load("conn").is_delivered(first)
    assert state.progress(first) == (0, True)
    state.record_progress(first, 3, False)  # the same object, overwritten
    assert state.progress(first) == (3, False)
    with open(state.record_path(first, ".pending.json")) as handle:
        assert json.load(handle)["idempotency_key"] == first.key_for(3)
    state.record(first, "d", 4, 3)
    ledger = state.load("conn")
    assert ledger.is_delivered(first) and ledger.delivered == {first.idempotency_key}


def test_an_unreadable_progress_record_is_none(tmp_path):
    state, first = RunState(str(tmp_path)), body()
    state.record_progress(first, 1, False)
    with open(state.record_path(first, ".pending.json"), "w") as handle:
        handle.write("{not json")
    assert state.load("conn").has_progress(first) and state.progress(first) is None


def test_records_of_one_connection_span_months_and_stay_apart_from_others(tmp_path):
    state = RunState(str(tmp_path) + "/")  # a trailing slash is the same place
    bodies = [body(seq=1), body(seq=2), body(month="2024-09"), body(connection="c2")]
    for each in bodies:
        state.record(each, None, 1)
    assert state.delivered_keys("conn") == {b.idempotency_key for b in bodies[:3]}
    assert state.delivered_keys("c2") == {bodies[3].idempotency_key}


def test_state_written_before_generations_existed_still_counts(tmp_path):
    """Records from earlier versions were named by the body's one key, which is generation 0."""
    first = body()
    os.makedirs(tmp_path / "conn" / "2024-08")
    (tmp_path / "conn" / "2024-08" / f"{first.idempotency_key}.json").write_text(
        json.dumps({"idempotency_key": first.idempotency_key}))
    assert RunState(str(tmp_path)).load("conn").is_delivered(first)
