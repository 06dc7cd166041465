"""Faults, reruns and secrets, end to end: the totals stay exact whatever the server does."""
import collections
import json

import pytest

from anycost_emulator import Emulator, FaultConfig
from tests.support import TEST_KEY, emulator_totals, expected_totals, run_cli, write_csv

HEADER = ["connection_id", "time/usage_start", "cost/cost", "resource/id", "lineitem/description"]


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("CLOUDZERO_API_KEY", TEST_KEY)


def _input(tmp_path, connections=4, rows_per=120):
    """Rows for several connections and two months; ~8 bodies per connection at 2,500 bytes."""
    rows, expected = [], []
    for i in range(connections * rows_per):
        conn, month = f"conn-{i % connections}", ("2024-10", "2024-11")[(i // connections) % 2]
        cost = f"{(i * 37) % 1000}.{i % 100:02d}"
        rows.append([conn, f"{month}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z", cost, f"res-{i}", f"line {i}"])
        expected.append((conn, month, cost))
    path = write_csv(str(tmp_path / "in" / "costs.csv"), HEADER, rows)
    return path, expected_totals(expected)


def _args(emu, path, tmp_path, *extra):
    return ["--input", path, "--stream_column", "connection_id", "--max_body_bytes", "2500",
            f"--api_url={emu.url}", f"--report_path={tmp_path}/report.json", *extra]


def test_transient_faults_never_lose_or_double_count(key, tmp_path, capsys):
    path, expected = _input(tmp_path)
    faults = FaultConfig(rate_5xx=0.15, retry_after_5xx=None, rate_429=0.10, retry_after_429=0.01,
                         rate_drop_after_apply=0.10)
    with Emulator(api_key=TEST_KEY, faults=faults, seed=7) as emu:
        code, report, printed = run_cli(_args(emu, path, tmp_path, "--max_attempts", "20"), capsys)
        assert code == 0, printed
        assert emulator_totals(emu) == expected
        assert emu.concurrency_violations == 0
        injected = collections.Counter(r.fault for r in emu.requests if r.fault)
        assert injected["drop_after_apply"] > 0 and injected["429"] > 0 and injected["5xx"] > 0
        # a body's key changed only after definite errors: one key per body plus one per move
        keys = {r.idempotency_key for r in emu.requests if r.method == "POST"}
        moves = sum(len(entry.get("key_moves", [])) for months in report["streams"].values()
                    for entry in months.values())
        assert report["bodies_sent"] == emu.applied_drops == report["bodies_planned"]
        assert moves > 0 and len(keys) == report["bodies_sent"] + moves
        assert emu.idempotent_replays >= injected["drop_after_apply"]


def test_retry_after_is_honoured_for_503_and_429(key, tmp_path, capsys):
    path, expected = _input(tmp_path, connections=1, rows_per=10)
    faults = FaultConfig(script=["503_retry_after", "429"], retry_after_5xx=0.4, retry_after_429=0.3)
    with Emulator(api_key=TEST_KEY, faults=faults) as emu:
        code, _, printed = run_cli(_args(emu, path, tmp_path), capsys)
        assert code == 0, printed
        first, second, third = [r for r in emu.requests if r.method == "POST"][:3]
        assert (first.status, second.status, third.status) == (503, 429, 200)
        assert second.started - first.ended >= 0.39 and third.started - second.ended >= 0.29
        # the 503 moved the key; the 429 may be about a concurrent request, so it kept it
        assert first.idempotency_key != second.idempotency_key == third.idempotency_key
        assert emulator_totals(emu) == expected


def test_a_response_slower_than_the_read_timeout_is_retried_with_the_same_key(key, tmp_path, capsys):
    path, expected = _input(tmp_path, connections=1, rows_per=40)
    faults = FaultConfig(script=["slow"], slow_seconds=1.5)
    with Emulator(api_key=TEST_KEY, faults=faults) as emu:
        code, report, printed = run_cli(_args(emu, path, tmp_path, "--read_timeout", "0.5"), capsys)
        assert code == 0, printed
        assert emulator_totals(emu) == expected
        posts = [r for r in emu.requests if r.method == "POST"]
        first_key = posts[0].idempotency_key
        assert [r.idempotency_key for r in posts[:2]] == [first_key, first_key]
        assert emu.idempotent_replays >= 1


def test_state_path_makes_a_rerun_post_nothing_even_when_keys_are_forgotten(key, tmp_path, capsys):
    path, expected = _input(tmp_path)
    state = str(tmp_path / "state")
    with Emulator(api_key=TEST_KEY) as emu:
        code, first, _ = run_cli(_args(emu, path, tmp_path, "--state_path", state), capsys)
        assert code == 0 and first["bodies_sent"] > 8
        posts = emu.post_count
        emu.forget_idempotency_keys()
        code, second, printed = run_cli(_args(emu, path, tmp_path, "--state_path", state), capsys)
        assert code == 0, printed
        assert emu.post_count == posts  # zero POSTs the second time
        assert second["bodies_sent"] == 0 and second["bodies_already_delivered"] == first["bodies_sent"]
        assert emulator_totals(emu) == expected


def test_a_permanent_403_then_a_rerun_with_state_gives_exact_totals(key, tmp_path, capsys):
    path, expected = _input(tmp_path)
    state = str(tmp_path / "state")
    with Emulator(api_key=TEST_KEY, faults=FaultConfig(forbid_after_drops=5)) as emu:
        code, first, printed = run_cli(_args(emu, path, tmp_path, "--state_path", state), capsys)
        assert code == 1
        assert first["bodies_sent"] == 5 and first["bodies_failed"] >= 1 and first["bodies_not_sent"] >= 1
        statuses = {entry["status"] for months in first["streams"].values() for entry in months.values()}
        assert "failed" in statuses
        assert "billing-drop scope" in printed and TEST_KEY not in printed
        total_bodies = first["bodies_planned"]

        emu.configure(faults=FaultConfig())
        emu.forget_idempotency_keys()
        posts_before = emu.post_count
        code, second, printed = run_cli(_args(emu, path, tmp_path, "--state_path", state), capsys)
        assert code == 0, printed
        assert emu.post_count - posts_before == total_bodies - 5
        assert second["bodies_already_delivered"] == 5
        assert emulator_totals(emu) == expected
        assert emu.concurrency_violations == 0


def test_the_key_never_appears_in_logs_reports_or_dead_letters(key, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLOUDZERO_LOG_LEVEL", "DEBUG")  # every log line, Beam's and ours, to stderr
    path, _ = _input(tmp_path, connections=2, rows_per=20)
    with open(path, "a") as handle:
        handle.write("conn-0,garbage,1,r,x\n")
    with Emulator(api_key=TEST_KEY, faults=FaultConfig(rate_5xx=0.3, forbid_after_drops=3)) as emu:
        code, report, printed = run_cli(_args(emu, path, tmp_path, "--max_rejected_rows", "1",
                                              f"--dead_letter_path={tmp_path}/dead/x"), capsys)
    assert code == 1
    assert "cloudzero.delivery" in printed and "DEBUG" in printed  # the logs really were captured
    outputs = [printed, json.dumps(report)]
    for dead in report["dead_letter_files"]:
        outputs.append(open(dead).read())
    assert all(TEST_KEY not in text for text in outputs)


def test_the_sink_cannot_be_pickled_with_the_key(key):
    import pickle
    from apache_beam.internal import pickler
    from anycost.config import RunConfig
    from transforms.sink import _SendConnections
    sink = _SendConnections(RunConfig(inputs=("x",), connection_id="c"))
    assert TEST_KEY.encode() not in pickler.dumps(sink)  # what the runner ships to workers
    sink.setup()
    try:
        assert sink._key.reveal() == TEST_KEY  # setup() really read the key
        # Everything the sink holds after setup, except the thread pool (unpicklable anyway):
        # the key itself must be what refuses, with Python's pickle and with Beam's.
        held = {name: value for name, value in vars(sink).items() if name != "_pool"}
        for dumps in (pickle.dumps, pickler.dumps):
            with pytest.raises(TypeError, match="the API key is never pickled"):
                dumps(held)
    finally:
        sink.teardown()


def test_a_server_echoing_the_key_is_redacted(key):
    import http.server
    import threading
    from anycost.delivery.client import AnyCostClient
    from anycost.delivery.api_key import ApiKey

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"message": f"key {self.headers['Authorization']} is not allowed"}).encode()
            self.send_response(403)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = AnyCostClient(f"http://127.0.0.1:{server.server_address[1]}", ApiKey(TEST_KEY))
        outcome = client.create_drop("c1", b"{}", "k")
        client.close()
    finally:
        server.shutdown()
    assert outcome.status == 403 and TEST_KEY not in outcome.message and "<api key>" in outcome.message


def _hidden_data_set(tmp_path, seed, connections=3):
    """A data set the connector has not seen: random rows over several streams and months,
    costs with up to 9 decimals (negative ones too), text that needs JSON escaping."""
    import random
    rng = random.Random(seed)
    rows, expected = [], collections.defaultdict(list)
    for i in range(rng.randint(250, 400)):
        conn = f"stream-{rng.randrange(connections)}"
        month = rng.choice(["2024-06", "2024-07", "2024-08"])
        cost = f"{rng.choice(['', '-'])}{rng.randint(0, 10**6)}.{rng.randint(0, 10**9):09d}"
        text = rng.choice(["plain", 'a "quoted" word', "comma, inside", "back\\slash", "ünïcødé €"]) + f" {i}"
        start = f"{month}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z"
        rows.append([conn, start, cost, f"res-{rng.randrange(50)}", text])
        expected[(conn, month)].append({"time/usage_start": start, "cost/cost": cost,
                                        "resource/id": rows[-1][3], "lineitem/description": text})
    path = write_csv(str(tmp_path / "in" / f"hidden-{seed}.csv"), HEADER, rows)
    return path, expected


def _canonical(rows):
    return sorted(json.dumps(row, sort_keys=True) for row in rows)


@pytest.mark.parametrize("seed", [11, 12])
def test_cached_errors_and_dropped_answers_still_deliver_exactly_and_a_rerun_posts_nothing(key, tmp_path,
                                                                                            capsys, seed):
    """CloudZero's behaviour: the first answer to a key is cached, errors included. 30% of
    answers fail (application 5xx, cached; load-balancer 5xx with Retry-After, not cached)
    and 10% are applied with the answer lost. Every stream-month arrives exactly: the same
    rows, text and Decimal cost; nothing twice; a rerun with the same --state_path posts nothing."""
    from decimal import Decimal
    path, expected = _hidden_data_set(tmp_path, seed)
    state = str(tmp_path / "state")
    faults = FaultConfig(rate_5xx=0.15, rate_front_5xx=0.15, retry_after_front_5xx=0.01,
                         rate_drop_after_apply=0.10)
    with Emulator(api_key=TEST_KEY, faults=faults, seed=seed) as emu:
        code, report, printed = run_cli(_args(emu, path, tmp_path, "--state_path", state), capsys)
        assert code == 0, printed
        for (conn, month), rows in expected.items():
            held = emu.rows(conn, month)
            assert _canonical(held) == _canonical(rows), (conn, month)
            assert sum(Decimal(r["cost/cost"]) for r in held) == sum(Decimal(r["cost/cost"]) for r in rows)
        assert sum(len(emu.rows(c, m)) for c, m in expected) == sum(len(r) for r in expected.values())
        assert emu.applied_drops == report["bodies_sent"] == report["bodies_planned"]
        injected = collections.Counter(r.fault for r in emu.requests if r.fault)
        assert injected["5xx"] and injected["front_5xx"] and injected["drop_after_apply"], injected
        assert report["bodies_moved_to_a_new_key"] > 0 and "moved to a new idempotency key" in printed
        assert emu.concurrency_violations == 0

        posts = emu.post_count
        code, again, printed = run_cli(_args(emu, path, tmp_path, "--state_path", state), capsys)
        assert code == 0, printed
        assert emu.post_count == posts and again["bodies_already_delivered"] == report["bodies_sent"]
        assert {(c, m): _canonical(emu.rows(c, m)) for c, m in expected} == {
            key_: _canonical(rows) for key_, rows in expected.items()}


def test_a_rerun_without_state_replays_cached_answers_and_adds_nothing(key, tmp_path, capsys):
    """Every body's first answer is a cached application 503; the run moves each to its next
    key. A rerun without --state_path walks the same keys: the cached 503 again, then the
    cached success of generation 1. Nothing is applied twice."""
    path, expected = _input(tmp_path, connections=1, rows_per=30)
    with Emulator(api_key=TEST_KEY, faults=FaultConfig(script=["5xx"] * 2)) as emu:
        code, report, printed = run_cli(_args(emu, path, tmp_path), capsys)
        assert code == 0, printed
        applied = emu.applied_drops
        code, again, printed = run_cli(_args(emu, path, tmp_path), capsys)
        assert code == 0, printed
        assert emu.applied_drops == applied and emulator_totals(emu) == expected
        moved = [entry for months in again["streams"].values() for entry in months.values()
                 if entry.get("key_moves")]
        assert moved and "HTTP 50" in moved[0]["key_moves"][0]


def test_a_month_that_would_pass_a_million_rows_is_refused_before_any_of_it_is_sent(key, tmp_path, capsys):
    """CloudZero already holds 990,000 rows for 2024-08; this run would `sum` 20,000 more.
    The month is refused before any of its bodies is sent; the months before and after it,
    and the other connection, are delivered; the run exits 1."""
    from decimal import Decimal
    rows, expected = [], collections.defaultdict(lambda: [0, Decimal(0)])
    for i in range(20_000):
        rows.append(["full", f"2024-08-{1 + i % 28:02d}T{i % 24:02d}:00:00Z", f"{i % 97}.25", f"r{i}", "x"])
    for conn, month in [("full", "2024-07"), ("full", "2024-09"), ("other", "2024-08")]:
        for i in range(40):
            rows.append([conn, f"{month}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z", f"{i}.5", f"r{i}", "y"])
            expected[(conn, month)][0] += 1
            expected[(conn, month)][1] += Decimal(f"{i}.5")
    path = write_csv(str(tmp_path / "in" / "daily.csv"), HEADER, rows)
    with Emulator(api_key=TEST_KEY) as emu:
        emu.preload("full", "2024-08", 990_000, cost="1000.50")  # earlier daily runs' drops
        before = emu.totals()["full"]["2024-08"]
        posts_before = emu.post_count
        code, report, printed = run_cli(["--input", path, "--stream_column", "connection_id",
                                         f"--api_url={emu.url}", f"--report_path={tmp_path}/report.json"], capsys)
        assert code == 1, printed
        refused = report["streams"]["full"]["2024-08"]
        assert refused["status"] == "refused" and refused["rows"] == 20_000
        assert "990,000" in refused["messages"][0] and "20,000" in refused["messages"][0]
        assert "CloudZero already holds 990,000 rows for 2024-08" in printed
        after = emu.totals()
        assert after["full"]["2024-08"] == before  # not one of its bodies was sent
        new_posts = [r for r in emu.requests[posts_before:] if r.method == "POST"]
        assert new_posts and all(r.status == 200 for r in new_posts)
        for (conn, month), (count, cost) in expected.items():
            assert report["streams"][conn][month]["status"] == "delivered"
            assert (after[conn][month]["rows"], Decimal(after[conn][month]["cost"])) == (count, cost)
        assert report["month_check"] == "checked"


def test_skip_month_check_sends_without_reading_and_says_so(key, tmp_path, capsys):
    path, expected = _input(tmp_path, connections=2, rows_per=20)
    with Emulator(api_key=TEST_KEY) as emu:
        code, report, printed = run_cli(_args(emu, path, tmp_path, "--skip_month_check"), capsys)
        assert code == 0, printed
        assert all(r.method == "POST" for r in emu.requests)  # no GET of the drops
        assert report["month_check"] == "skipped (--skip_month_check)"
        assert "monthly row limits were not checked" in printed
        assert emulator_totals(emu) == expected
