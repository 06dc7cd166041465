"""One Ctrl-C stops an upload after the request in flight, writes the report and says how
to resume; the rerun sends the rest, nothing twice. A real `python -m pipeline` process, a
real SIGINT, the emulator on 127.0.0.1."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from decimal import Decimal

from anycost.bodies.packing import PlannedBody
from anycost.delivery import ConnectionSender, DELIVERED, FAILED, NOT_SENT
from anycost.delivery.retry import Outcome, RetryPolicy
from anycost_emulator import Emulator
from tests.support import PINNED_RUNNER, TEST_KEY, emulator_totals, expected_totals, write_csv

REPO = pathlib.Path(__file__).resolve().parent.parent
HEADER = ["time/usage_start", "cost/cost", "resource/id"]


def _start(args, cwd):
    env = {**os.environ, "CLOUDZERO_API_KEY": TEST_KEY, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *args, *PINNED_RUNNER], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_a_post(emulator, process):
    """Until the emulator has answered one create request (or the run ended first)."""
    deadline = time.monotonic() + 120  # a safety net only: the test never depends on timing
    while not any(r.method == "POST" and r.path.endswith("/billing_drops") for r in emulator.requests):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no POST arrived"
        time.sleep(0.01)


def test_one_ctrl_c_stops_after_the_request_in_flight_and_the_rerun_sends_the_rest(tmp_path):
    rows = [[f"2024-08-{1 + i % 28:02d}T{i % 24:02d}:00:00Z", f"{i}.{i % 10}1", f"res-{i}"] for i in range(400)]
    source = write_csv(str(tmp_path / "in" / "costs.csv"), HEADER, rows)
    expected = expected_totals([("c1", "2024-08", str(Decimal(cost))) for _, cost, _ in rows])
    with Emulator(api_key=TEST_KEY, latency_seconds=0.05) as emulator:
        args = ["--input", source, "--connection_id", "c1", f"--api_url={emulator.url}",
                "--max_body_bytes", "1000", f"--state_path={tmp_path / 'state'}",
                f"--report_path={tmp_path / 'report.json'}"]
        process = _start(args, tmp_path)
        try:
            _wait_for_a_post(emulator, process)
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=300)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 130, out + err
        assert "Traceback" not in out + err
        report = json.loads((tmp_path / "report.json").read_text())
        planned = report["bodies_planned"]
        assert planned > 30
        assert 1 <= emulator.applied_drops == report["bodies_sent"] < planned
        assert report["bodies_not_sent"] == planned - report["bodies_sent"]
        assert "stopped by the user" in json.dumps(report["streams"])
        assert "stopped by the user (Ctrl-C)" in err
        assert f"run the same command again with the same --state_path ({tmp_path / 'state'})" in err

        again = _start(args, tmp_path)
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, out + err
        assert emulator.applied_drops == planned  # each body once, across both runs
        assert emulator_totals(emulator) == expected
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["bodies_already_delivered"] + report["bodies_sent"] == planned


def _body(seq, count=3):
    return PlannedBody("c1", "2024-08", "sum", seq, count, 1, b"{}", f"k{seq}")


class _Client:
    def __init__(self, answers):
        self.answers, self.posted = list(answers), []

    def create_drop(self, connection_id, body, key):
        self.posted.append(key)
        return self.answers.pop(0)


def test_a_stop_between_bodies_sends_no_more():
    stop = []
    client = _Client([Outcome(status=200, payload={})] * 3)

    def bodies():
        yield _body(1)
        stop.append(True)  # Ctrl-C while body 1 was in flight
        yield _body(2)
        yield _body(3)

    results = ConnectionSender(client, RetryPolicy(), should_stop=lambda: bool(stop)).send(bodies())
    assert [r.status for r in results] == [DELIVERED, NOT_SENT, NOT_SENT]
    assert results[1].message == "not sent: stopped by the user" and client.posted == ["k1"]


def test_a_stop_during_a_wait_for_a_retry_ends_the_body_without_another_attempt():
    stop = []
    client = _Client([Outcome(status=503), Outcome(status=200, payload={})])
    sender = ConnectionSender(client, RetryPolicy(backoff_base=0), sleep=lambda _: stop.append(True),
                              should_stop=lambda: bool(stop))
    results = sender.send([_body(1, 2), _body(2, 2)])
    assert [r.status for r in results] == [FAILED, NOT_SENT] and len(client.posted) == 1
    assert results[0].message.startswith("stopped by the user while waiting to retry: HTTP 503")
