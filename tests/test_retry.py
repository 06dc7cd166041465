"""anycost.delivery.retry: which outcomes are retried, how long to wait, and when to give up."""
import email.utils
import random
import time

import pytest
from hypothesis import given, settings, strategies as st

from anycost.delivery.retry import KeyGeneration, Outcome, RetryPolicy, explain, parse_retry_after

POLICY = RetryPolicy(max_attempts=8, max_total_seconds=600, backoff_base=0.5, backoff_max=60)
KEY = "sk-SECRET-api-key-123"


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_success_is_not_retried(status):
    decision = POLICY.decide(1, 0.0, Outcome(status=status), now=0.0, rng=random.Random(0))
    assert not decision.retry and decision.reason == "delivered"
    assert Outcome(status=status).ok


@pytest.mark.parametrize("status, words", [
    (400, "CloudZero rejected the body"),
    (401, "refused the API key"),
    (403, "refused the API key, or the key lacks the billing-drop scope"),
    (404, "check --api_url and the connection id"),
    (413, "lower --max_body_bytes"),
])
def test_client_errors_are_never_retried(status, words):
    outcome = Outcome(status=status, message="server says no", retry_after="1")
    decision = POLICY.decide(1, 0.0, outcome, now=0.0, rng=random.Random(0))
    assert not decision.retry
    assert words in decision.reason and f"HTTP {status}" in decision.reason
    assert "server says no" in decision.reason
    assert not RetryPolicy.is_retryable(outcome)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_message_never_holds_the_key(status):
    # Only the server's message is shown, never the raw payload or headers it came with.
    outcome = Outcome(status=status, message="Forbidden", payload={"headers": {"Authorization": KEY}},
                      retry_after=KEY)
    decision = POLICY.decide(1, 0.0, outcome, now=0.0, rng=random.Random(0))
    assert KEY not in decision.reason and KEY not in repr(decision) and "key" in decision.reason
    assert "--api_key_env" in decision.reason


@pytest.mark.parametrize("status", [402, 405, 409, 422, 301, 302, 100])
def test_other_statuses_fail_without_retry(status):
    decision = POLICY.decide(1, 0.0, Outcome(status=status, message="m"), now=0.0, rng=random.Random(0))
    assert not decision.retry and f"HTTP {status}" in decision.reason


@pytest.mark.parametrize("outcome", [
    Outcome(status=408), Outcome(status=429), Outcome(status=500), Outcome(status=502),
    Outcome(status=503), Outcome(status=504), Outcome(status=599),
    Outcome(error="timeout", message="read timed out"), Outcome(error="connection", message="reset"),
    Outcome(error="connect", message="refused"), Outcome(error="dns"), Outcome(error="tls_handshake"),
])
def test_transient_failures_are_retried(outcome):
    decision = POLICY.decide(1, 0.0, outcome, now=0.0, rng=random.Random(0))
    assert decision.retry and 0 <= decision.delay <= POLICY.backoff_base
    assert RetryPolicy.is_retryable(outcome)


def test_unknown_error_and_certificate_failure_are_not_retried():
    assert not POLICY.decide(1, 0.0, Outcome(error="tls"), now=0.0, rng=random.Random(0)).retry
    assert not POLICY.decide(1, 0.0, Outcome(error="tls_certificate"), now=0.0, rng=random.Random(0)).retry


@pytest.mark.parametrize("error, applied", [("timeout", True), ("connection", True), ("connect", False),
                                            ("dns", False), ("tls_handshake", False),
                                            ("tls_certificate", False)])
def test_only_an_unanswered_request_that_went_out_may_have_been_applied(error, applied):
    assert Outcome(error=error).may_have_been_applied is applied
    assert ("may have been applied" in explain(Outcome(error=error))) is applied
    assert ("nothing was sent" in explain(Outcome(error=error))) is not applied
    assert not Outcome(status=503).may_have_been_applied and not Outcome(status=201).may_have_been_applied


def test_timeout_message_says_the_drop_may_have_been_applied():
    reason = POLICY.decide(1, 0.0, Outcome(error="timeout"), now=0.0, rng=random.Random(0)).reason
    assert "may have been applied" in reason


def test_retry_after_seconds_is_honoured():
    decision = POLICY.decide(1, 0.0, Outcome(status=429, retry_after="7"), now=0.0, rng=random.Random(0))
    assert decision.retry and decision.delay == 7.0
    decision = POLICY.decide(3, 0.0, Outcome(status=503, retry_after=" 2.5 "), now=0.0, rng=random.Random(0))
    assert decision.delay == 2.5


def test_retry_after_http_date_is_honoured():
    now = 1_723_813_200.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    decision = POLICY.decide(1, 0.0, Outcome(status=503, retry_after=header), now=now, rng=random.Random(0))
    assert decision.retry and decision.delay == pytest.approx(30.0)


def test_retry_after_too_long_gives_up():
    decision = POLICY.decide(1, 100.0, Outcome(status=429, retry_after="501"), now=0.0, rng=random.Random(0))
    assert not decision.retry and "gave up" in decision.reason and "--max_retry_seconds" in decision.reason


@pytest.mark.parametrize("value, now, expected", [
    ("0", 0, 0.0), ("120", 0, 120.0), ("-5", 0, 0.0), ("", 0, None), (None, 0, None),
    ("soon", 0, None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480.0 - 10, 10.0),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480.0 + 10, 0.0),  # a date in the past: no wait
])
def test_parse_retry_after(value, now, expected):
    result = parse_retry_after(value, now)
    assert result == (None if expected is None else pytest.approx(expected))


def test_retry_after_date_without_zone_is_utc_not_local_time(monkeypatch):
    now = 1445412480.0 - 10  # ten seconds before Wed, 21 Oct 2015 07:28:00 UTC
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", now) == pytest.approx(10.0)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_attempt_limit():
    outcome = Outcome(status=503)
    policy = RetryPolicy(max_attempts=3)
    assert policy.decide(1, 0, outcome, now=0.0, rng=random.Random(0)).retry
    assert policy.decide(2, 0, outcome, now=0.0, rng=random.Random(0)).retry
    decision = policy.decide(3, 0, outcome, now=0.0, rng=random.Random(0))
    assert not decision.retry and "gave up after 3 attempts" in decision.reason and "HTTP 503" in decision.reason


def test_total_time_limit():
    policy = RetryPolicy(max_attempts=100, max_total_seconds=10, backoff_base=1, backoff_max=1)
    assert policy.decide(1, 8.9, Outcome(status=503), now=0.0, rng=random.Random(0)).retry  # 8.9 + at most 1
    decision = policy.decide(5, 10.0, Outcome(status=503), now=0.0, rng=random.Random(0))
    assert not decision.retry and "gave up after 5 attempts" in decision.reason


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 30), st.integers(0, 2**32), st.floats(0.01, 5), st.floats(0.1, 100))
def test_full_jitter_bounds(attempt, seed, base, cap):
    policy = RetryPolicy(max_attempts=1000, max_total_seconds=1e9, backoff_base=base, backoff_max=cap)
    decision = policy.decide(attempt, 0.0, Outcome(status=500), now=0.0, rng=random.Random(seed))
    assert decision.retry
    assert 0 <= decision.delay <= min(cap, base * 2 ** (attempt - 1))
    again = policy.decide(attempt, 0.0, Outcome(status=500), now=0.0, rng=random.Random(seed))
    assert again.delay == decision.delay  # a seeded Random gives the same wait


def test_jitter_spreads_over_the_whole_range():
    policy = RetryPolicy(backoff_base=1, backoff_max=60, max_total_seconds=1e9, max_attempts=100)
    rng = random.Random(42)
    delays = [policy.decide(4, 0, Outcome(status=503), now=0.0, rng=rng).delay for _ in range(2000)]
    assert max(delays) <= 8 and min(delays) >= 0
    assert min(delays) < 0.5 and max(delays) > 7.5  # full jitter, not "equal" jitter
    capped = [policy.decide(20, 0, Outcome(status=503), now=0.0, rng=rng).delay for _ in range(500)]
    assert max(capped) <= 60 and max(capped) > 50


def test_explain_uses_server_message():
    assert explain(Outcome(status=400, message="row 3: bad cost")) == "HTTP 400: CloudZero rejected the body: row 3: bad cost"
    assert explain(Outcome(status=500)) == "HTTP 500"
    assert explain(Outcome(error="connection", message="reset by peer")) == (
        "the connection broke (reset by peer) after the request was sent; it may have been applied")


def test_no_retry_starts_that_could_not_finish_within_the_total_time():
    # A dead endpoint: every attempt may take the whole connect + read timeout (40 s).
    policy = RetryPolicy(max_attempts=8, max_total_seconds=100, backoff_base=0.5, attempt_seconds=40)
    timeout = Outcome(error="timeout")
    assert policy.decide(1, 30.0, timeout, now=0.0, rng=random.Random(0)).retry  # 30 + <=0.5 + 40
    decision = policy.decide(2, 60.5, timeout, now=0.0, rng=random.Random(0))
    assert not decision.retry
    assert decision.reason.startswith("gave up after 2 attempts in 60 s (another would pass --max_retry_seconds 100)")


@pytest.mark.parametrize("error", ["connect", "dns", "tls_handshake", "timeout", "connection"])
def test_default_policy_ends_a_dead_endpoint_within_two_minutes(error):
    """Attempts that fail at once (refused) or only after the whole timeout (no answer): the
    default policy with the default timeouts gives up within 90 s, whatever the jitter."""
    policy = RetryPolicy(attempt_seconds=10 + 30)  # the defaults: --connect_timeout 10, --read_timeout 30
    for seed in range(50):
        rng, elapsed, attempt = random.Random(seed), 0.0, 0
        while True:
            attempt += 1
            elapsed += 40 if error in ("timeout", "tls_handshake") else 0.01
            decision = policy.decide(attempt, elapsed, Outcome(error=error), now=0.0, rng=rng)
            if not decision.retry:
                break
            elapsed += decision.delay
        assert elapsed <= 90 and attempt <= 8 and "gave up" in decision.reason


def test_a_definite_error_moves_to_the_next_key():
    generation, moved = KeyGeneration().after(Outcome(status=503))
    assert generation == KeyGeneration(1, False) and "under key generation 0" in moved and "HTTP 503" in moved
    generation, moved = generation.after(Outcome(status=403))
    assert generation.number == 2 and moved


@pytest.mark.parametrize("status", [429, 409, 408, 418, 302])
def test_a_refusal_that_may_be_about_concurrency_never_moves_the_key(status):
    """Another request for the connection may be applying this very body under this key."""
    generation, moved = KeyGeneration(1).after(Outcome(status=status))
    assert generation == KeyGeneration(1, False) and moved is None


@pytest.mark.parametrize("outcome", [Outcome(error="timeout"), Outcome(error="connection")])
def test_an_unanswered_attempt_pins_the_key_for_good(outcome):
    generation, moved = KeyGeneration().after(outcome)
    assert generation == KeyGeneration(0, True) and moved is None
    for later in (Outcome(status=503), Outcome(status=500), Outcome(error="connect"), Outcome(status=429)):
        generation, moved = generation.after(later)
        assert generation == KeyGeneration(0, True) and moved is None


@pytest.mark.parametrize("error", ["connect", "dns", "tls_handshake", "tls_certificate"])
def test_nothing_sent_keeps_the_key_and_does_not_pin_it(error):
    generation, moved = KeyGeneration(2).after(Outcome(error=error))
    assert generation == KeyGeneration(2, False) and moved is None
    assert generation.after(Outcome(status=502))[0] == KeyGeneration(3, False)


def test_success_and_an_earlier_runs_doubt_keep_the_key():
    assert KeyGeneration().after(Outcome(status=201)) == (KeyGeneration(), None)
    resumed = KeyGeneration(1, in_doubt=True)  # an earlier run may have got generation 1 applied
    assert resumed.after(Outcome(status=503)) == (resumed, None)


def test_generations_are_bounded():
    generation = KeyGeneration(limit=3)
    for _ in range(10):
        generation, _ = generation.after(Outcome(status=503))
    assert generation.number == 2


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([Outcome(status=503), Outcome(status=429), Outcome(status=502),
                                 Outcome(error="timeout"), Outcome(error="connection"),
                                 Outcome(error="connect"), Outcome(error="dns")]), max_size=30))
def test_a_key_that_may_have_been_applied_is_never_left(outcomes):
    """The money rule on any sequence of answers: the key only changes when every attempt
    under the old key got a definite answer or sent nothing."""
    generation, under_key = KeyGeneration(), []
    for outcome in outcomes:
        under_key.append(outcome)
        following, moved = generation.after(outcome)
        if following.number != generation.number:
            assert moved and following.number == generation.number + 1
            assert not any(o.may_have_been_applied for o in under_key)
            under_key = []
        generation = following
