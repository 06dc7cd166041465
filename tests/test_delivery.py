"""anycost.delivery.ConnectionSender with a fake client, clock and state: order, one request
at a time, the same key on every retry, stop after a permanent failure, resume from state."""
import random

import pytest

from anycost import delivery
from anycost.delivery import ALREADY_DELIVERED, DELIVERED, FAILED, INVALID, NOT_SENT, VALID, ConnectionSender
from anycost.packing import PlannedBody, idempotency_key
from anycost.retry import Outcome, RetryPolicy

OK = Outcome(status=201, payload={"connection": {"drop_id": "d-1", "month": "2024-08", "row_count": 1}})


def make_body(month, seq, count=3, connection="conn"):
    body = b'{"month":"%s","operation":"sum","data":[{"n":"%d"}]}' % (month.encode(), seq)
    return PlannedBody(connection, month, "sum", seq, count, 1, body,
                       idempotency_key(connection, month, "sum", seq, body))


class FakeClient:
    """Answers from a script: {(month, seq): [outcome, ...]}; anything unscripted succeeds."""

    def __init__(self, log, script=None):
        self.log, self.script, self.in_flight = log, script or {}, 0

    def _answer(self, body):
        doc_month = body.split(b'"month":"')[1][:7].decode()
        seq = int(body.split(b'"n":"')[1].split(b'"')[0])
        queue = self.script.get((doc_month, seq), [])
        return queue.pop(0) if queue else OK

    def create_drop(self, connection_id, body, key):
        assert self.in_flight == 0, "two requests in flight on one connection"
        self.in_flight += 1
        try:
            self.log.append(("post", connection_id, key, body))
            return self._answer(body)
        finally:
            self.in_flight -= 1

    def validate_drop(self, body):
        self.log.append(("validate", body))
        return self._answer(body)


class FakeState:
    def __init__(self, log, delivered=()):
        self.log, self.delivered = log, set(delivered)
        self.asked = []

    def delivered_keys(self, connection_id):
        self.asked.append(connection_id)
        return set(self.delivered)

    def record(self, body, drop_id, attempts):
        self.log.append(("record", body.idempotency_key, drop_id, attempts))


class FakeTime:
    def __init__(self, log):
        self.now, self.log = 1000.0, log

    def sleep(self, seconds):
        self.log.append(("sleep", seconds))
        self.now += seconds

    def clock(self):
        return self.now


def sender(script=None, delivered=None, policy=None, observer=None):
    log = []
    client = FakeClient(log, script)
    state = None if delivered is None else FakeState(log, delivered)
    clock = FakeTime(log)
    result = ConnectionSender(client, policy or RetryPolicy(max_attempts=5, max_total_seconds=600),
                              state=state, observer=observer, sleep=clock.sleep, clock=clock.clock,
                              rng=random.Random(7))
    return result, log, state


def posts(log):
    return [entry for entry in log if entry[0] == "post"]


def test_bodies_go_in_the_order_given_and_out_of_order_is_refused():
    expected = [("2024-08", 1), ("2024-08", 2), ("2024-08", 3), ("2024-09", 1), ("2024-09", 2)]
    bodies = [make_body(month, seq) for month, seq in expected]
    send, log, _ = sender()
    results = send.send(iter(bodies))  # lazily, as the sink produces them month by month
    assert [(r.month, r.seq) for r in results] == expected
    by_key = {b.idempotency_key: (b.month, b.seq) for b in bodies}
    assert [by_key[p[2]] for p in posts(log)] == expected
    assert all(r.status == DELIVERED and r.attempts == 1 and r.drop_id == "d-1" for r in results)
    send, log, _ = sender()
    with pytest.raises(ValueError, match="in order"):
        send.send([make_body("2024-09", 1), make_body("2024-08", 1)])


def test_empty():
    send, log, _ = sender(delivered=[])
    assert send.send([]) == [] and log == []


def test_retries_reuse_the_idempotency_key_and_wait_in_between():
    body = make_body("2024-08", 1, count=1)
    script = {("2024-08", 1): [Outcome(status=503), Outcome(error="timeout"),
                               Outcome(status=429, retry_after="4"), OK]}
    send, log, _ = sender(script)
    [result] = send.send([body])
    assert result.status == DELIVERED and result.attempts == 4
    assert [p[2] for p in posts(log)] == [body.idempotency_key] * 4
    assert [p[3] for p in posts(log)] == [body.body] * 4
    kinds = [entry[0] for entry in log]
    assert kinds == ["post", "sleep", "post", "sleep", "post", "sleep", "post"]
    assert log[5] == ("sleep", 4.0)  # Retry-After honoured


def test_a_waiting_body_holds_the_connection():
    bodies = [make_body("2024-08", 1), make_body("2024-08", 2)]
    send, log, _ = sender({("2024-08", 1): [Outcome(status=500), Outcome(status=500)]})
    send.send(bodies)
    kinds = [(entry[0], entry[2] if entry[0] == "post" else None) for entry in log]
    first, second = bodies[0].idempotency_key, bodies[1].idempotency_key
    assert kinds == [("post", first), ("sleep", None), ("post", first), ("sleep", None), ("post", first),
                     ("post", second)]


def test_permanent_failure_stops_the_connection():
    bodies = [make_body("2024-08", s) for s in (1, 2, 3)] + [make_body("2024-09", 1)]
    send, log, _ = sender({("2024-08", 2): [Outcome(status=403, message="Forbidden")]})
    results = send.send(bodies)
    assert [r.status for r in results] == [DELIVERED, FAILED, NOT_SENT, NOT_SENT]
    assert len(posts(log)) == 2 and not any(e[0] == "sleep" for e in log)  # 403 is never retried
    assert "HTTP 403" in results[1].message and "Forbidden" in results[1].message and results[1].attempts == 1
    assert results[2].message == "not sent: conn 2024-08 body 2/3 failed earlier"
    assert results[3].attempts == 0 and results[3].rows == 1


def test_retries_exhausted_fail_the_body():
    bodies = [make_body("2024-08", 1), make_body("2024-08", 2)]
    send, log, state = sender({("2024-08", 1): [Outcome(status=503)] * 10}, delivered=[],
                              policy=RetryPolicy(max_attempts=3))
    results = send.send(bodies)
    assert [r.status for r in results] == [FAILED, NOT_SENT]
    assert results[0].attempts == 3 and "gave up after 3 attempts" in results[0].message
    assert len(posts(log)) == 3 and not any(e[0] == "record" for e in log)


def test_total_time_limit_uses_the_clock():
    body = make_body("2024-08", 1, count=1)
    policy = RetryPolicy(max_attempts=100, max_total_seconds=10, backoff_base=1, backoff_max=1)
    send, log, _ = sender({("2024-08", 1): [Outcome(status=429, retry_after="4")] * 10}, policy=policy)
    [result] = send.send([body])
    assert result.status == FAILED and "--max_retry_seconds" in result.message
    assert [e[1] for e in log if e[0] == "sleep"] == [4.0, 4.0]  # 0 -> 4 -> 8, then 12 > 10


def test_already_delivered_bodies_are_skipped():
    bodies = [make_body("2024-08", s) for s in (1, 2, 3)]
    send, log, state = sender(delivered=[bodies[0].idempotency_key, bodies[2].idempotency_key])
    results = send.send(bodies)
    assert [r.status for r in results] == [ALREADY_DELIVERED, DELIVERED, ALREADY_DELIVERED]
    assert [p[2] for p in posts(log)] == [bodies[1].idempotency_key]
    assert state.asked == ["conn"]


def test_everything_delivered_makes_no_request():
    bodies = [make_body("2024-08", s) for s in (1, 2, 3)]
    send, log, _ = sender(delivered=[b.idempotency_key for b in bodies])
    assert [r.status for r in send.send(bodies)] == [ALREADY_DELIVERED] * 3
    assert posts(log) == []


def test_already_delivered_after_a_failure_is_still_reported_as_delivered():
    bodies = [make_body("2024-08", 1), make_body("2024-08", 2), make_body("2024-08", 3)]
    send, log, _ = sender({("2024-08", 1): [Outcome(status=400, message="bad")]},
                          delivered=[bodies[2].idempotency_key])
    assert [r.status for r in send.send(bodies)] == [FAILED, NOT_SENT, ALREADY_DELIVERED]
    assert len(posts(log)) == 1


def test_state_recorded_only_after_success():
    bodies = [make_body("2024-08", 1), make_body("2024-08", 2)]
    script = {("2024-08", 1): [Outcome(status=500), OK], ("2024-08", 2): [Outcome(status=413)]}
    send, log, _ = sender(script, delivered=[])
    send.send(bodies)
    kinds = [e[0] for e in log]
    assert kinds == ["post", "sleep", "post", "record", "post"]
    assert log[3] == ("record", bodies[0].idempotency_key, "d-1", 2)


def test_success_without_payload_still_delivers():
    send, log, _ = sender({("2024-08", 1): [Outcome(status=200, payload=None)]}, delivered=[])
    [result] = send.send([make_body("2024-08", 1, count=1)])
    assert result.status == DELIVERED and result.drop_id is None
    assert log[-1][0] == "record"


def test_observer_sees_attempts_and_retries():
    class Counting(delivery.Observer):
        def __init__(self):
            self.attempts, self.retries = [], []

        def attempt(self, outcome, seconds):
            self.attempts.append(outcome.status)

        def retry(self, body, decision):
            self.retries.append((body.seq, decision.retry))

    observer = Counting()
    send, _, _ = sender({("2024-08", 1): [Outcome(status=502)]}, observer=observer)
    send.send([make_body("2024-08", 1, count=1)])
    assert observer.attempts == [502, 201] and observer.retries == [(1, True)]


def test_validate_reports_valid_and_invalid():
    bodies = [make_body("2024-08", 1), make_body("2024-08", 2), make_body("2024-08", 3)]
    script = {
        ("2024-08", 1): [Outcome(status=200, payload={"connection": {"is_valid": True, "errors": []}})],
        ("2024-08", 2): [Outcome(status=200, payload={"connection": {"is_valid": False,
                                                                      "errors": ["bad cost", "bad time"]}})],
        ("2024-08", 3): [Outcome(status=403, message="Forbidden")],
    }
    send, log, _ = sender(script)
    results = send.validate(bodies)
    assert [r.status for r in results] == [VALID, INVALID, FAILED]
    assert results[1].message == "bad cost; bad time" and "HTTP 403" in results[2].message
    assert posts(log) == []


def test_results_carry_body_identity():
    body = make_body("2024-08", 2, count=5)
    send, _, _ = sender()
    [result] = send.send([body])
    assert (result.connection_id, result.month, result.seq, result.count, result.rows, result.bytes,
            result.idempotency_key) == ("conn", "2024-08", 2, 5, 1, len(body.body), body.idempotency_key)


@pytest.mark.parametrize("failing", [1, 2, 3])
def test_nothing_after_a_failure_is_posted(failing):
    bodies = [make_body("2024-08", s) for s in (1, 2, 3)]
    send, log, _ = sender({("2024-08", failing): [Outcome(status=404)]})
    results = send.send(bodies)
    assert len(posts(log)) == failing
    assert [r.status for r in results] == [DELIVERED] * (failing - 1) + [FAILED] + [NOT_SENT] * (3 - failing)
