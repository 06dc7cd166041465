"""anycost.retry: which outcomes are retried, how long to wait, and when to give up."""
import email.utils
import random
import time

import pytest
from hypothesis import given, settings, strategies as st

from anycost import retry
from anycost.retry import Outcome, RetryPolicy, explain, parse_retry_after

POLICY = RetryPolicy(max_attempts=8, max_total_seconds=600, backoff_base=0.5, backoff_max=60)
KEY = "sk-SECRET-api-key-123"


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_success_is_not_retried(status):
    decision = POLICY.decide(1, 0.0, Outcome(status=status), random.Random(0))
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
    decision = POLICY.decide(1, 0.0, outcome, random.Random(0))
    assert not decision.retry
    assert words in decision.reason and f"HTTP {status}" in decision.reason
    assert "server says no" in decision.reason
    assert not RetryPolicy.is_retryable(outcome)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failure_message_never_holds_the_key(status):
    # Only the server's message is shown, never the raw payload or headers it came with.
    outcome = Outcome(status=status, message="Forbidden", payload={"headers": {"Authorization": KEY}},
                      retry_after=KEY)
    decision = POLICY.decide(1, 0.0, outcome, random.Random(0))
    assert KEY not in decision.reason and KEY not in repr(decision) and "key" in decision.reason
    assert "--api_key_env" in decision.reason


@pytest.mark.parametrize("status", [402, 405, 409, 422, 301, 302, 100])
def test_other_statuses_fail_without_retry(status):
    decision = POLICY.decide(1, 0.0, Outcome(status=status, message="m"), random.Random(0))
    assert not decision.retry and f"HTTP {status}" in decision.reason


@pytest.mark.parametrize("outcome", [
    Outcome(status=408), Outcome(status=429), Outcome(status=500), Outcome(status=502),
    Outcome(status=503), Outcome(status=504), Outcome(status=599),
    Outcome(error="timeout", message="read timed out"), Outcome(error="connection", message="reset"),
])
def test_transient_failures_are_retried(outcome):
    decision = POLICY.decide(1, 0.0, outcome, random.Random(0))
    assert decision.retry and 0 <= decision.delay <= POLICY.backoff_base
    assert RetryPolicy.is_retryable(outcome)


def test_unknown_error_without_status_is_not_retried():
    assert not POLICY.decide(1, 0.0, Outcome(error="tls"), random.Random(0)).retry


def test_timeout_message_says_the_drop_may_have_been_applied():
    reason = POLICY.decide(1, 0.0, Outcome(error="timeout"), random.Random(0)).reason
    assert "may have been applied" in reason


def test_retry_after_seconds_is_honoured():
    decision = POLICY.decide(1, 0.0, Outcome(status=429, retry_after="7"), random.Random(0))
    assert decision.retry and decision.delay == 7.0
    decision = POLICY.decide(3, 0.0, Outcome(status=503, retry_after=" 2.5 "), random.Random(0))
    assert decision.delay == 2.5


def test_retry_after_http_date_is_honoured(monkeypatch):
    now = 1_723_813_200.0
    monkeypatch.setattr(retry.time, "time", lambda: now)
    header = email.utils.formatdate(now + 30, usegmt=True)
    decision = POLICY.decide(1, 0.0, Outcome(status=503, retry_after=header), random.Random(0))
    assert decision.retry and decision.delay == pytest.approx(30.0)


def test_retry_after_too_long_gives_up():
    decision = POLICY.decide(1, 100.0, Outcome(status=429, retry_after="501"), random.Random(0))
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
    assert policy.decide(1, 0, outcome, random.Random(0)).retry
    assert policy.decide(2, 0, outcome, random.Random(0)).retry
    decision = policy.decide(3, 0, outcome, random.Random(0))
    assert not decision.retry and "gave up after 3 attempts" in decision.reason and "HTTP 503" in decision.reason


def test_total_time_limit():
    policy = RetryPolicy(max_attempts=100, max_total_seconds=10, backoff_base=1, backoff_max=1)
    assert policy.decide(1, 8.9, Outcome(status=503), random.Random(0)).retry  # 8.9 + at most 1
    decision = policy.decide(5, 10.0, Outcome(status=503), random.Random(0))
    assert not decision.retry and "gave up after 5 attempts" in decision.reason


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 30), st.integers(0, 2**32), st.floats(0.01, 5), st.floats(0.1, 100))
def test_full_jitter_bounds(attempt, seed, base, cap):
    policy = RetryPolicy(max_attempts=1000, max_total_seconds=1e9, backoff_base=base, backoff_max=cap)
    decision = policy.decide(attempt, 0.0, Outcome(status=500), random.Random(seed))
    assert decision.retry
    assert 0 <= decision.delay <= min(cap, base * 2 ** (attempt - 1))
    again = policy.decide(attempt, 0.0, Outcome(status=500), random.Random(seed))
    assert again.delay == decision.delay  # a seeded Random gives the same wait


def test_jitter_spreads_over_the_whole_range():
    policy = RetryPolicy(backoff_base=1, backoff_max=60, max_total_seconds=1e9, max_attempts=100)
    rng = random.Random(42)
    delays = [policy.decide(4, 0, Outcome(status=503), rng).delay for _ in range(2000)]
    assert max(delays) <= 8 and min(delays) >= 0
    assert min(delays) < 0.5 and max(delays) > 7.5  # full jitter, not "equal" jitter
    capped = [policy.decide(20, 0, Outcome(status=503), rng).delay for _ in range(500)]
    assert max(capped) <= 60 and max(capped) > 50


def test_explain_uses_server_message():
    assert explain(Outcome(status=400, message="row 3: bad cost")) == "HTTP 400: CloudZero rejected the body: row 3: bad cost"
    assert explain(Outcome(status=500)) == "HTTP 500"
    assert explain(Outcome(error="connection", message="reset by peer")) == "connection failed: reset by peer"
