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
    with Emulator(api_key=TEST_KEY, faults=faults, seed=7, cache_errors=False) as emu:
        code, report, printed = run_cli(_args(emu, path, tmp_path, "--max_attempts", "20"), capsys)
        assert code == 0, printed
        assert emulator_totals(emu) == expected
        assert emu.concurrency_violations == 0
        injected = collections.Counter(r.fault for r in emu.requests if r.fault)
        assert injected["drop_after_apply"] > 0 and injected["429"] > 0 and injected["5xx"] > 0
        # every retry reused its body's key: the number of distinct keys is the number of bodies
        keys = {r.idempotency_key for r in emu.requests}
        assert len(keys) == report["bodies_sent"] == emu.applied_drops
        assert emu.idempotent_replays >= injected["drop_after_apply"]


def test_retry_after_is_honoured_for_503_and_429(key, tmp_path, capsys):
    path, expected = _input(tmp_path, connections=1, rows_per=10)
    faults = FaultConfig(script=["503_retry_after", "429"], retry_after_5xx=0.4, retry_after_429=0.3)
    with Emulator(api_key=TEST_KEY, faults=faults, cache_errors=False) as emu:
        code, _, printed = run_cli(_args(emu, path, tmp_path), capsys)
        assert code == 0, printed
        first, second, third = emu.requests[:3]
        assert (first.status, second.status, third.status) == (503, 429, 200)
        assert second.started - first.ended >= 0.39 and third.started - second.ended >= 0.29
        assert first.idempotency_key == second.idempotency_key == third.idempotency_key
        assert emulator_totals(emu) == expected


def test_a_response_slower_than_the_read_timeout_is_retried_with_the_same_key(key, tmp_path, capsys):
    path, expected = _input(tmp_path, connections=1, rows_per=40)
    faults = FaultConfig(script=["slow"], slow_seconds=1.5)
    with Emulator(api_key=TEST_KEY, faults=faults) as emu:
        code, report, printed = run_cli(_args(emu, path, tmp_path, "--read_timeout", "0.5"), capsys)
        assert code == 0, printed
        assert emulator_totals(emu) == expected
        first_key = emu.requests[0].idempotency_key
        assert [r.idempotency_key for r in emu.requests[:2]] == [first_key, first_key]
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
    from anycost.config import RunConfig
    from transforms.sink import SendConnections
    sink = SendConnections(RunConfig(inputs=("x",), connection_id="c"))
    assert TEST_KEY.encode() not in pickle.dumps(sink)
    sink.setup()
    try:
        with pytest.raises(TypeError):
            pickle.dumps(sink)
    finally:
        sink.teardown()


def test_a_server_echoing_the_key_is_redacted(key):
    import http.server
    import threading
    from anycost.client import AnyCostClient
    from anycost.api_key import ApiKey

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
