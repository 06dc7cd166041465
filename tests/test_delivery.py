"""anycost.delivery.ConnectionSender with a fake client and clock and the real RunState on
tmp_path: order, one request at a time (checked across real threads), key generations
against a client that replays first answers like CloudZero, stop after a permanent
failure, resume from state, and the monthly row limit against what CloudZero holds."""
import dataclasses
import json
import random
import threading
import time

import pytest

from anycost import delivery
from anycost.delivery import (ALREADY_DELIVERED, DELIVERED, FAILED, INVALID, NOT_SENT, VALID, ConnectionSender,
                              month_limit_refusal, rows_held)
from anycost.bodies.packing import PlannedBody, idempotency_key
from anycost.delivery.retry import KeyGeneration, Outcome, RetryPolicy
from anycost.delivery.ledger import RunState

OK = Outcome(status=201, payload={"connection": {"drop_id": "d-1", "month": "2024-08", "row_count": 1}})
# What a first answer to a new key can be (see FakeClient): the application's error is cached
# and replayed; an error in front of the application is not; "applied, then dropped" caches
# the success but the client only sees the connection break.
APP_503 = Outcome(status=503, message="application error")
FRONT_502 = "front_502"
APPLIED_THEN_DROPPED = "applied_then_dropped"
LOST_IN_TRANSIT = "lost_in_transit"  # a read timeout for a request that never reached the application


def make_body(month, seq, count=3, connection="conn"):
    body = b'{"month":"%s","operation":"sum","data":[{"n":"%d"}]}' % (month.encode(), seq)
    return PlannedBody(connection, month, "sum", seq, count, 1, body,
                       idempotency_key(connection, month, "sum", seq, body))


class FakeClient:
    """CloudZero as documented, scripted: {(month, seq): [answer, ...]}.

    A gateway 502 at the head of the script answers the next request whatever its key
    (errors in front of the application are never cached). Other entries answer requests
    with a key that has no answer yet; a key's first answer from the application (a 5xx, or
    the success of an applied drop) is replayed to every later request with that key. Bodies
    applied are counted per (month, seq), so a double count shows. Thread-safe: requests
    on one connection that overlap in time are recorded as violations, and `hold` keeps
    each request in flight for that long so that overlaps really can happen."""

    def __init__(self, log, script=None, hold=0.0):
        self.log, self.script, self.hold = log, script or {}, hold
        self.cached, self.applied = {}, {}
        self.in_flight, self.most_in_flight, self.violations = {}, 0, []
        self.lock = threading.Lock()
        self.held = {}  # connection -> rows CloudZero holds per month, for list_drops
        self.drops = {}  # connection -> the drops applied, for list_drops

    @staticmethod
    def _identity(body):
        doc_month = body.split(b'"month":"')[1][:7].decode()
        seq = int(body.split(b'"n":"')[1].split(b'"')[0])
        return doc_month, seq

    def _enter(self, connection_id):
        with self.lock:
            if self.in_flight.get(connection_id):
                self.violations.append(connection_id)
            self.in_flight[connection_id] = self.in_flight.get(connection_id, 0) + 1
            self.most_in_flight = max(self.most_in_flight, sum(self.in_flight.values()))
        if self.hold:
            time.sleep(self.hold)

    def _leave(self, connection_id):
        with self.lock:
            self.in_flight[connection_id] -= 1

    def create_drop(self, connection_id, body, key):
        self._enter(connection_id)
        try:
            with self.lock:
                self.log.append(("post", connection_id, key, body))
                identity = self._identity(body)
                queue = self.script.get(identity, [])
                if queue and queue[0] == FRONT_502:  # in front of the cache: any key
                    queue.pop(0)
                    return Outcome(status=502, message="Bad Gateway")
                if key in self.cached:
                    return self.cached[key]
                answer = queue.pop(0) if queue else OK
                if answer == LOST_IN_TRANSIT:
                    return Outcome(error="timeout", message="within --read_timeout 30 s")
                if answer == APPLIED_THEN_DROPPED or answer.ok:
                    self.applied[identity] = self.applied.get(identity, 0) + 1
                    success = self._apply(connection_id, body, answer if answer != APPLIED_THEN_DROPPED else OK)
                    self.cached[key] = success
                    return Outcome(error="connection", message="reset") if answer == APPLIED_THEN_DROPPED else success
                if answer.status is not None and answer.status >= 500:
                    self.cached[key] = answer  # the application's error: replayed to every retry
                return answer
        finally:
            self._leave(connection_id)

    def _apply(self, connection_id, body, answer):
        """Store a drop (listed by `list_drops`, as CloudZero does) under an id of its own."""
        document = json.loads(body)
        drop = {"drop_id": f"d-{sum(map(len, self.drops.values())) + 1}", "month": document["month"],
                "row_count": len(document["data"])}
        self.drops.setdefault(connection_id, []).append(drop)
        if not (answer.payload or {}).get("connection"):  # CloudZero answered without the drop
            return answer
        return dataclasses.replace(answer, payload={"connection": dict(drop)})

    def validate_drop(self, body):
        self.log.append(("validate", body))
        queue = self.script.get(self._identity(body), [])
        return queue.pop(0) if queue else OK

    def list_drops(self, connection_id):
        self.log.append(("list", connection_id))
        queue = self.script.get(("list", connection_id), [])
        if queue:
            return queue.pop(0)
        drops = [{"drop_id": f"old-{month}", "month": month, "row_count": rows}
                 for month, rows in self.held.get(connection_id, {}).items()] + self.drops.get(connection_id, [])
        return Outcome(status=200, payload={"billing_drops": drops})


class FakeTime:
    def __init__(self, log):
        self.now, self.log = 1000.0, log

    def sleep(self, seconds):
        self.log.append(("sleep", seconds))
        self.now += seconds

    def clock(self):
        return self.now


def sender(script=None, state_path=None, policy=None, observer=None, client=None):
    log = []
    client = client or FakeClient(log, script)
    client.log = log
    state = RunState(str(state_path)) if state_path else None
    clock = FakeTime(log)
    result = ConnectionSender(client, policy or RetryPolicy(max_attempts=5, max_total_seconds=600),
                              state=state, observer=observer, sleep=clock.sleep, clock=clock.clock,
                              rng=random.Random(7), wall_clock=lambda: clock.now)
    return result, log, client


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
    assert all(r.status == DELIVERED and r.attempts == 1 for r in results)
    assert [r.drop_id for r in results] == [f"d-{n}" for n in range(1, 6)]
    send, log, _ = sender()
    with pytest.raises(ValueError, match="in order"):
        send.send([make_body("2024-09", 1), make_body("2024-08", 1)])


def test_empty(tmp_path):
    send, log, _ = sender(state_path=tmp_path)
    assert send.send([]) == [] and log == []


def test_unanswered_retries_reuse_the_key_and_wait_in_between():
    body = make_body("2024-08", 1, count=1)
    script = {("2024-08", 1): [LOST_IN_TRANSIT, Outcome(status=429, retry_after="4"), OK]}
    send, log, client = sender(script)
    [result] = send.send([body])
    assert result.status == DELIVERED and result.attempts == 3
    # The timeout pinned generation 0: the definite 429 after it does not move the key.
    assert [p[2] for p in posts(log)] == [body.idempotency_key] * 3
    assert result.generation == 0 and result.key_moves == ()
    kinds = [entry[0] for entry in log]
    assert kinds == ["post", "sleep", "post", "sleep", "post"]
    assert log[3] == ("sleep", 4.0)  # Retry-After honoured
    assert client.applied == {("2024-08", 1): 1}


def test_a_replayed_application_error_moves_the_body_to_its_next_key(tmp_path):
    """The defect this design fixes: a cached 503 used to fail the body on every retry."""
    body = make_body("2024-08", 1, count=1)
    send, log, client = sender({("2024-08", 1): [APP_503]}, state_path=tmp_path)
    [result] = send.send([body])
    assert result.status == DELIVERED and result.attempts == 2 and result.generation == 1
    assert [p[2] for p in posts(log)] == [body.key_for(0), body.key_for(1)]
    assert body.key_for(1) != body.key_for(0) and result.idempotency_key == body.key_for(1)
    assert result.key_moves == ("attempt 2 used key generation 1: every attempt under key generation 0 got "
                                 "a definite error (HTTP 503), which CloudZero would replay to every retry with that key",)
    assert client.applied == {("2024-08", 1): 1}


def test_without_a_ledger_a_body_never_moves_and_says_what_to_do():
    """A rerun without the ledger would walk the keys from generation 0 again; a key left
    after load-balancer errors alone is new to CloudZero and would be applied a second time.
    So without a ledger the key stays, and the failure says to run with a state path."""
    body = make_body("2024-08", 1, count=1)
    send, log, client = sender({("2024-08", 1): [APP_503]}, policy=RetryPolicy(max_attempts=4))
    [result] = send.send([body])
    assert result.status == FAILED and result.generation == 0 and result.key_moves == ()
    assert [p[2] for p in posts(log)] == [body.key_for(0)] * 4 and client.applied == {}
    assert "without a delivery ledger (state_path)" in result.message and "HTTP 503" in result.message


def test_a_rerun_of_a_run_that_moved_past_load_balancer_errors_applies_nothing_twice(tmp_path):
    """Run 1 meets a load-balancer 502 under generation 0 (nothing cached), moves, and
    generation 1 is applied. A rerun with the same ledger skips the body; had it walked the
    keys again, generation 0 would have been applied a second time."""
    body = make_body("2024-08", 1, count=1)
    client = FakeClient([], {("2024-08", 1): [FRONT_502]})
    first, _, _ = sender(client=client, state_path=tmp_path)
    assert first.send([body])[0].generation == 1 and client.applied == {("2024-08", 1): 1}
    second, log, _ = sender(client=client, state_path=tmp_path)
    assert second.send([body])[0].status == ALREADY_DELIVERED and posts(log) == []
    assert client.applied == {("2024-08", 1): 1}


def test_applied_then_dropped_keeps_the_key_so_the_cached_success_answers():
    body = make_body("2024-08", 1, count=1)
    send, log, client = sender({("2024-08", 1): [APPLIED_THEN_DROPPED]})
    [result] = send.send([body])
    assert result.status == DELIVERED and result.generation == 0
    assert [p[2] for p in posts(log)] == [body.key_for(0)] * 2
    assert client.applied == {("2024-08", 1): 1}


def test_a_key_in_doubt_is_kept_even_when_later_answers_are_definite_errors(tmp_path):
    """Generation 1 was applied but the answer was lost; the gateway then answers 502 (not
    cached). Moving to generation 2 would apply the body twice: the sender must not. Without
    a ledger it keeps the key until it gives up; with one, the listing shows the drop."""
    body = make_body("2024-08", 1, count=1)
    script = {("2024-08", 1): [APP_503, APPLIED_THEN_DROPPED, FRONT_502, FRONT_502]}
    send, log, client = sender(script, policy=RetryPolicy(max_attempts=3))
    send._first_generation = lambda body, ledger: KeyGeneration()  # walk keys as with a ledger
    [result] = send.send([body])
    assert result.status == FAILED and "gave up after 3 attempts" in result.message
    assert [p[2] for p in posts(log)] == [body.key_for(0), body.key_for(1), body.key_for(1)]
    assert client.applied == {("2024-08", 1): 1}

    script = {("2024-08", 1): [APP_503, APPLIED_THEN_DROPPED, FRONT_502, FRONT_502]}
    send, log, client = sender(script, state_path=tmp_path, policy=RetryPolicy(max_attempts=3))
    [result] = send.send([body])
    assert result.status == DELIVERED and result.drop_id == "d-1" and "so it was applied" in result.message
    assert [p[2] for p in posts(log)] == [body.key_for(0), body.key_for(1), body.key_for(1)]
    assert client.applied == {("2024-08", 1): 1}
    assert RunState(str(tmp_path)).delivered_keys("conn") == {body.idempotency_key}


def test_connect_failures_keep_the_key_without_pinning_it(tmp_path):
    body = make_body("2024-08", 1, count=1)
    refused = Outcome(error="connect", message="127.0.0.1: connection refused")
    client = FakeClient([], {("2024-08", 1): [APP_503]})
    calls = []
    real = client.create_drop

    def flaky(connection_id, data, key):  # the first two attempts never reach the server
        calls.append(key)
        return refused if len(calls) <= 2 else real(connection_id, data, key)
    client.create_drop = flaky
    send, _, _ = sender(client=client, state_path=tmp_path)
    [result] = send.send([body])
    assert calls == [body.key_for(0)] * 3 + [body.key_for(1)]
    assert result.status == DELIVERED and result.generation == 1


@pytest.mark.parametrize("seed", range(40))
def test_random_answers_never_count_a_body_twice_or_lose_it_while_retries_last(seed):
    rng = random.Random(seed)
    bodies = [make_body(month, seq) for month in ("2024-08", "2024-09") for seq in (1, 2, 3)]
    choices = [APP_503, FRONT_502, APPLIED_THEN_DROPPED, LOST_IN_TRANSIT, OK, OK, OK]
    script = {(b.month, b.seq): [rng.choice(choices) for _ in range(6)] for b in bodies}
    send, log, client = sender(script, policy=RetryPolicy(max_attempts=12, max_total_seconds=1e9))
    results = send.send(bodies)
    assert all(count == 1 for count in client.applied.values())
    for result in results:
        assert result.status in (DELIVERED, FAILED, NOT_SENT)
        if result.status == DELIVERED:
            assert client.applied[(result.month, result.seq)] == 1


def test_a_waiting_body_holds_the_connection():
    bodies = [make_body("2024-08", 1), make_body("2024-08", 2)]
    send, log, _ = sender({("2024-08", 1): [FRONT_502, FRONT_502]})
    send.send(bodies)
    kinds = [(entry[0], entry[2] if entry[0] == "post" else None) for entry in log]
    first, second = bodies[0], bodies[1].idempotency_key
    assert kinds == [("post", first.key_for(0)), ("sleep", None), ("post", first.key_for(0)), ("sleep", None),
                     ("post", first.key_for(0)), ("post", second)]


def _send_in_threads(client, connections, same_connection_twice=False):
    """One ConnectionSender per connection, on its own thread, all sharing `client`."""
    def run(connection):
        send = ConnectionSender(client, RetryPolicy(), sleep=lambda s: None)
        send.send([make_body("2024-08", seq, 4, connection) for seq in (1, 2, 3, 4)])
    names = connections + (connections[:1] if same_connection_twice else [])
    threads = [threading.Thread(target=run, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_one_request_in_flight_per_connection_while_connections_overlap():
    client = FakeClient([], hold=0.02)
    _send_in_threads(client, [f"conn-{i}" for i in range(4)])
    assert client.most_in_flight > 1  # the threads really overlapped
    assert client.violations == []
    assert len(client.applied) == 4 and len(posts(client.log)) == 16


def test_the_in_flight_check_catches_two_senders_on_one_connection():
    client = FakeClient([], hold=0.02)
    _send_in_threads(client, ["conn-0", "conn-1"], same_connection_twice=True)
    assert "conn-0" in client.violations and "conn-1" not in client.violations


def test_permanent_failure_stops_the_connection():
    bodies = [make_body("2024-08", s) for s in (1, 2, 3)] + [make_body("2024-09", 1)]
    send, log, _ = sender({("2024-08", 2): [Outcome(status=403, message="Forbidden")]})
    results = send.send(bodies)
    assert [r.status for r in results] == [DELIVERED, FAILED, NOT_SENT, NOT_SENT]
    assert len(posts(log)) == 2 and not any(e[0] == "sleep" for e in log)  # 403 is never retried
    assert "HTTP 403" in results[1].message and "Forbidden" in results[1].message and results[1].attempts == 1
    assert results[2].message == "not sent: conn 2024-08 body 2/3 failed earlier"
    assert results[3].attempts == 0 and results[3].rows == 1


def test_retries_exhausted_fail_the_body_and_nothing_is_recorded_as_delivered(tmp_path):
    bodies = [make_body("2024-08", 1), make_body("2024-08", 2)]
    send, log, _ = sender({("2024-08", 1): [FRONT_502] * 10}, state_path=tmp_path,
                          policy=RetryPolicy(max_attempts=3))
    results = send.send(bodies)
    assert [r.status for r in results] == [FAILED, NOT_SENT]
    assert results[0].attempts == 3 and "gave up after 3 attempts" in results[0].message
    assert results[0].generation == 2 and len(results[0].key_moves) == 2
    assert len(posts(log)) == 3
    state = RunState(str(tmp_path))
    assert state.delivered_keys("conn") == set()
    # every answer was definite, and CloudZero replays the last one to its key: a rerun takes the next
    assert state.progress(bodies[0]) == (3, False)
    assert state.progress(bodies[1]) is None


def test_total_time_limit_uses_the_clock():
    body = make_body("2024-08", 1, count=1)
    policy = RetryPolicy(max_attempts=100, max_total_seconds=10, backoff_base=1, backoff_max=1)
    send, log, _ = sender({("2024-08", 1): [Outcome(status=429, retry_after="4")] * 10}, policy=policy)
    [result] = send.send([body])
    assert result.status == FAILED and "--max_retry_seconds" in result.message
    assert [e[1] for e in log if e[0] == "sleep"] == [4.0, 4.0]  # 0 -> 4 -> 8, then 12 > 10


def test_already_delivered_bodies_are_skipped(tmp_path):
    bodies = [make_body("2024-08", s) for s in (1, 2, 3)]
    first, _, _ = sender(state_path=tmp_path)
    first.send([bodies[0], bodies[2]])
    send, log, _ = sender(state_path=tmp_path)
    results = send.send(bodies)
    assert [r.status for r in results] == [ALREADY_DELIVERED, DELIVERED, ALREADY_DELIVERED]
    assert [p[2] for p in posts(log)] == [bodies[1].idempotency_key]


def test_a_body_delivered_under_a_later_generation_is_skipped_on_rerun(tmp_path):
    bodies = [make_body("2024-08", s) for s in (1, 2)]
    first, log, _ = sender({("2024-08", 1): [APP_503, APP_503]}, state_path=tmp_path)
    assert [r.generation for r in first.send(bodies)] == [2, 0]
    send, log, _ = sender(state_path=tmp_path)
    assert [r.status for r in send.send(bodies)] == [ALREADY_DELIVERED] * 2
    assert posts(log) == []


def test_a_rerun_resumes_under_the_key_an_earlier_run_left_in_doubt(tmp_path):
    """Run 1: generation 0 got a replayed 503, generation 1 timed out after sending (it was
    applied) and the run gave up. Run 2 starts at generation 1, still in doubt: a gateway 502
    must not move it to generation 2, and the cached success then answers."""
    body = make_body("2024-08", 1, count=1)
    client = FakeClient([], {("2024-08", 1): [APP_503, APPLIED_THEN_DROPPED]})
    first, log, _ = sender(client=client, state_path=tmp_path, policy=RetryPolicy(max_attempts=2))
    assert first.send([body])[0].status == FAILED
    assert RunState(str(tmp_path)).progress(body) == (1, True)
    client.script[("2024-08", 1)] = [FRONT_502]  # the gateway fails run 2's first request
    second, log, _ = sender(client=client, state_path=tmp_path)
    [result] = second.send([body])
    assert result.status == DELIVERED and result.generation == 1 and result.key_moves == ()
    assert client.applied == {("2024-08", 1): 1}


def test_everything_delivered_makes_no_request(tmp_path):
    bodies = [make_body("2024-08", s) for s in (1, 2, 3)]
    sender(state_path=tmp_path)[0].send(bodies)
    send, log, _ = sender(state_path=tmp_path)
    assert [r.status for r in send.send(bodies)] == [ALREADY_DELIVERED] * 3
    assert posts(log) == []


def test_already_delivered_after_a_failure_is_still_reported_as_delivered(tmp_path):
    bodies = [make_body("2024-08", 1), make_body("2024-08", 2), make_body("2024-08", 3)]
    sender(state_path=tmp_path)[0].send([bodies[2]])
    send, log, _ = sender({("2024-08", 1): [Outcome(status=400, message="bad")]}, state_path=tmp_path)
    assert [r.status for r in send.send(bodies)] == [FAILED, NOT_SENT, ALREADY_DELIVERED]
    assert len(posts(log)) == 1


def test_state_recorded_only_after_success(tmp_path):
    bodies = [make_body("2024-08", 1), make_body("2024-08", 2)]
    script = {("2024-08", 1): [FRONT_502, OK], ("2024-08", 2): [Outcome(status=413)]}
    send, log, _ = sender(script, state_path=tmp_path)
    send.send(bodies)
    state = RunState(str(tmp_path))
    assert state.delivered_keys("conn") == {bodies[0].idempotency_key}
    import json
    with open(state.record_path(bodies[0])) as handle:
        record = json.load(handle)
    assert (record["generation"], record["idempotency_key"], record["drop_id"], record["attempts"]) == (
        1, bodies[0].key_for(1), "d-1", 2)


def test_success_without_payload_still_delivers(tmp_path):
    send, log, _ = sender({("2024-08", 1): [Outcome(status=200, payload=None)]}, state_path=tmp_path)
    [result] = send.send([make_body("2024-08", 1, count=1)])
    assert result.status == DELIVERED and result.drop_id is None
    assert len(RunState(str(tmp_path)).delivered_keys("conn")) == 1


def test_observer_sees_attempts_and_retries():
    class Counting(delivery.Observer):
        def __init__(self):
            self.attempts, self.retries = [], []

        def attempt(self, outcome, seconds):
            self.attempts.append(outcome.status)

        def retry(self, body, decision):
            self.retries.append((body.seq, decision.retry))

    observer = Counting()
    send, _, _ = sender({("2024-08", 1): [FRONT_502]}, observer=observer)
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


def test_rows_held_sums_row_counts_per_month():
    send, log, client = sender()
    client.held = {"conn": {"2024-08": 990_000}}
    client.script[("list", "conn")] = [Outcome(status=200, payload={"billing_drops": [
        {"drop_id": "a", "month": "2024-08", "row_count": 600_000},
        {"drop_id": "b", "month": "2024-08-01T00:00:00Z", "row_count": 390_000},
        {"drop_id": "c", "month": "2024-09", "row_count": 5}]})]
    assert send.rows_held("conn") == ({"2024-08": 990_000, "2024-09": 5}, None)
    assert log == [("list", "conn")]


def test_rows_held_failure_names_the_switch():
    send, log, client = sender()
    client.script[("list", "conn")] = [Outcome(status=403, message="Forbidden")]
    held, problem = send.rows_held("conn")
    assert held is None and "HTTP 403" in problem and "--skip_month_check" in problem
    assert "no month of conn was sent" in problem
    client.script[("list", "conn")] = [Outcome(status=200, payload={"unexpected": 1})]
    assert "--skip_month_check" in send.rows_held("conn")[1]
    # An endpoint that cannot be reached is not a scope problem: no misleading hint, and a
    # read that timed out cannot have applied anything.
    client.script[("list", "conn")] = [Outcome(error="timeout", message="within --read_timeout 30 s")] * 5
    held, problem = send.rows_held("conn")
    assert held is None and "--skip_month_check" not in problem and "applied" not in problem
    assert "no answer (within --read_timeout 30 s) after the request was sent" in problem


def test_month_limit_refusal_gives_both_numbers():
    assert month_limit_refusal("2024-08", 990_000, 10_000) is None
    message = month_limit_refusal("2024-08", 990_000, 20_000)
    assert "990,000" in message and "20,000" in message and "1,010,000" in message and "1,000,000" in message
    assert rows_held({"billing_drops": []}) == {}
    with pytest.raises(ValueError):
        rows_held({"drops": []})
