"""Runs that overlap or die at any moment, with real processes, real sockets and SIGKILL.

Each run is `python -m pipeline` in its own process group against the emulator on 127.0.0.1,
all on one ledger (`--state_path`). What must hold: one request in flight per connection
whatever the runs do, every run that finishes exits 0, and CloudZero ends holding exactly the
files' rows and `Decimal` costs per stream-month.
"""
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

from anycost.delivery import lease as leases
from anycost_emulator import Emulator, FaultConfig
from tests.support import PINNED_RUNNER, TEST_KEY, emulator_totals, expected_totals, write_csv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = ["connection_id", "time/usage_start", "cost/cost", "resource/id", "lineitem/description"]


def _input(tmp_path, connections=3, rows=900):
    """Rows for several connections over two months; dozens of small bodies in all."""
    lines, expected = [], []
    for i in range(rows):
        conn, month = f"conn-{i % connections}", ("2024-08", "2024-09")[(i // connections) % 2]
        cost = f"{(i * 37) % 1000}.{i % 100:02d}{i % 7}"
        lines.append([conn, f"{month}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z", cost, f"res-{i}", f"line {i} " + "x" * 40])
        expected.append((conn, month, cost))
    return write_csv(str(tmp_path / "in" / "costs.csv"), HEADER, lines), expected_totals(expected)


def _start(emu, path, state, folder, *extra):
    os.makedirs(folder, exist_ok=True)
    command = [sys.executable, "-m", "pipeline", "--input", path, "--stream_column", "connection_id",
               "--api_url", emu.url, "--state_path", state, "--max_body_bytes", "4000",
               "--report_path", os.path.join(folder, "report.json"), *PINNED_RUNNER, *extra]
    env = dict(os.environ, CLOUDZERO_API_KEY=TEST_KEY, PYTHONPATH=ROOT)
    log = open(os.path.join(folder, "log.txt"), "wb")
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    process.log_path = log.name
    log.close()
    return process


def _finish(process, timeout=300):
    code = process.wait(timeout=timeout)
    with open(process.log_path, errors="replace") as handle:
        return code, handle.read()


def test_two_runs_at_once_on_one_ledger_send_each_connection_once(tmp_path):
    """Airflow retrying a live attempt: both runs exit 0, never two requests at once, exact."""
    path, expected = _input(tmp_path)
    state = str(tmp_path / "state")
    with Emulator(api_key=TEST_KEY, latency_seconds=0.15) as emu:
        first = _start(emu, path, state, str(tmp_path / "a"))
        second = _start(emu, path, state, str(tmp_path / "b"))
        (code_a, log_a), (code_b, log_b) = _finish(first), _finish(second)
        assert (code_a, code_b) == (0, 0), log_a + log_b
        assert emu.concurrency_violations == 0
        assert emulator_totals(emu) == expected
        reports = [json.load(open(tmp_path / name / "report.json")) for name in ("a", "b")]
        planned = reports[0]["bodies_planned"]
        assert emu.applied_drops == planned  # each body once, between them
        assert reports[0]["bodies_sent"] + reports[1]["bodies_sent"] == planned
        assert "waiting for another run" in log_a + log_b


def test_a_crash_loop_under_cached_errors_and_dropped_answers_ends_exact(tmp_path):
    """15 SIGKILLs at random moments (cached 5xx, applied-then-dropped answers), each rerun on
    the same ledger, then a run to the end: exit 0 and exact, whatever was in flight."""
    path, expected = _input(tmp_path, rows=3600)  # ~170 bodies: a run outlives most kills
    state = str(tmp_path / "state")
    rng = random.Random(14)
    faults = FaultConfig(rate_5xx=0.2, rate_drop_after_apply=0.1)
    with Emulator(api_key=TEST_KEY, faults=faults, seed=14, latency_seconds=0.15) as emu:
        killed_while_sending = 0
        for kill in range(15):
            process = _start(emu, path, state, str(tmp_path / f"run-{kill}"), "--read_timeout", "3")
            posts = emu.post_count
            try:
                process.wait(timeout=rng.uniform(1.5, 5.0))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                killed_while_sending += emu.post_count > posts
        final = _start(emu, path, state, str(tmp_path / "final"), "--read_timeout", "3")
        code, log = _finish(final)
        assert code == 0, log
        assert emu.concurrency_violations == 0
        assert emulator_totals(emu) == expected
        assert killed_while_sending >= 5  # the kills really did land in the middle of sending
        print(f"{killed_while_sending} of 15 kills landed while sending; {emu.post_count} POSTs in all")


def test_a_lease_left_by_a_lost_host_expires_and_the_next_run_proceeds(tmp_path):
    path, expected = _input(tmp_path, connections=1, rows=120)
    state = str(tmp_path / "state")
    lost = leases.Holder("a-host-that-is-gone", 12345, "2026-12-07T01:00:00Z", "lost-run")
    store = leases.LocalLeaseStore(os.path.join(state, "conn-0", "lease"))
    store.put(leases.encode(lost, time.time() + 4), None)
    with Emulator(api_key=TEST_KEY) as emu:
        started = time.monotonic()
        code, log = _finish(_start(emu, path, state, str(tmp_path / "run")))
        assert code == 0, log
        assert time.monotonic() - started >= 4  # it waited for the lease to expire
        assert "waiting for another run" in log and "a-host-that-is-gone" in log
        assert "took over the lease" in log
        assert emulator_totals(emu) == expected


def test_a_live_lease_past_the_wait_ends_the_run_naming_the_holder_and_sends_nothing(tmp_path):
    path, _ = _input(tmp_path, connections=1, rows=120)
    state = str(tmp_path / "state")
    busy = leases.Holder(socket.gethostname() + "-elsewhere", 777, "2026-12-07T02:00:00Z", "busy-run")
    leases.LocalLeaseStore(os.path.join(state, "conn-0", "lease")).put(
        leases.encode(busy, time.time() + 600), None)
    with Emulator(api_key=TEST_KEY) as emu:
        code, log = _finish(_start(emu, path, state, str(tmp_path / "run"), "--lease_wait_seconds", "2"))
        assert code == 1
        assert "process 777 on host " + socket.gethostname() + "-elsewhere" in log
        assert "started 2026-12-07T02:00:00Z" in log and "run this command again" in log
        assert "--lease_wait_seconds" in log and "Traceback" not in log
        assert emu.post_count == 0


def test_after_a_cached_403_a_rerun_with_the_same_ledger_delivers(tmp_path):
    """Issue 17.3: CloudZero caches the 403 for the key; the rerun must take the next key."""
    path, expected = _input(tmp_path, connections=1, rows=120)
    state = str(tmp_path / "state")
    with Emulator(api_key=TEST_KEY, faults=FaultConfig(forbid_after_drops=2)) as emu:
        code, log = _finish(_start(emu, path, state, str(tmp_path / "first")))
        assert code == 1 and "billing-drop scope" in log
        emu.configure(faults=FaultConfig())  # the key is fixed; CloudZero keeps its cached 403s
        code, log = _finish(_start(emu, path, state, str(tmp_path / "second")))
        assert code == 0, log
        assert emulator_totals(emu) == expected
        assert emu.applied_drops == json.load(open(tmp_path / "second" / "report.json"))["bodies_planned"]
