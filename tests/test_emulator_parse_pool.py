"""The emulator's throughput mode parsing bodies on worker processes (anycost_emulator/parse_pool.py).

Real spawned processes and real sockets: a body parsed on a worker must give exactly the
answer it gets in the request's thread, a parallel client's totals must stay exact, and the
workers must be gone once the emulator stops."""
from __future__ import annotations

import os
import signal
import threading
import time
from decimal import Decimal

import orjson
import pytest
import requests

from anycost_emulator import Emulator, cli
from anycost_emulator.parse_pool import ParsePool, count_body

KEY = "parse-pool-key-5d1e"
API = "/v2/connections/billing/anycost"


def _body(rows, month="2024-08", operation="sum"):
    return orjson.dumps({"month": month, "operation": operation, "data": rows})


def _rows(count, offset=0):
    return [{"time/usage_start": f"2024-08-{1 + (i % 28):02d}T{i % 24:02d}:00:00Z",
             "cost/cost": f"{i + offset}.{i % 100:02d}", "resource/id": f"r-{i}"} for i in range(count)]


def _post(emu, connection, data):
    return requests.post(f"{emu.url}{API}/{connection}/billing_drops", data=data, timeout=30,
                         headers={"Authorization": KEY, "Content-Type": "application/json"})


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def pool():
    made = ParsePool(2)
    yield made
    made.close()


def test_a_body_parsed_on_a_worker_gives_the_answer_it_gets_here(pool):
    good = _body(_rows(3_000))
    bad_json = b'{"month": "2024-08", "data": [}'
    bad_shape = orjson.dumps({"month": "August", "data": []})
    bad_row = _body([{"cost/cost": "1"}])
    with pool._here:  # this process is busy parsing: every body goes to a worker
        there = [pool.count(data) for data in (good, bad_json, bad_shape, bad_row)]
    here = [count_body(data) for data in (good, bad_json, bad_shape, bad_row)]
    assert there == here
    assert there[0].row_count == 3_000 and there[0].cost == sum(Decimal(r["cost/cost"]) for r in _rows(3_000))
    assert all(isinstance(answer, str) for answer in there[1:])
    workers = list(pool._executor._processes)
    assert len(workers) == 1 and workers[0] != os.getpid() and _alive(workers[0])


def test_a_free_pool_parses_in_this_process_even_with_its_worker_killed():
    """Real kill: with its only worker gone, a body that finds this process free still gets
    its answer, so it never went near a worker."""
    pool = ParsePool(2)
    try:
        (worker,) = list(pool._executor._processes)
        os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker)
        assert pool.count(_body(_rows(10))).row_count == 10
    finally:
        pool.close()


def test_parallel_requests_parsed_on_the_workers_keep_every_total_exact():
    with Emulator(api_key=KEY, mode="throughput", parse_processes=2) as emu:
        bodies = {f"c{n}": [_body(_rows(2_000, offset=1_000 * k)) for k in range(3)] for n in range(4)}
        answers = []

        def send(connection):
            answers.extend(_post(emu, connection, data).status_code for data in bodies[connection])

        with emu._parse_pool._here:  # the emulator's own slot is taken: the workers parse them all
            threads = [threading.Thread(target=send, args=(c,)) for c in bodies]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert answers == [200] * 12
        expected = sum(Decimal(r["cost/cost"]) for k in range(3) for r in _rows(2_000, offset=1_000 * k))
        assert emu.totals() == {c: {"2024-08": {"rows": 6_000, "cost": expected, "bodies": 3}} for c in bodies}
        assert emu.stats()["concurrency_violations"] == 0
        workers = list(emu._parse_pool._executor._processes)
    assert workers and not any(_alive(pid) for pid in workers)  # stopped with the emulator


def test_parse_processes_must_be_a_whole_number_and_throughput_only():
    with pytest.raises(ValueError, match="at least 1"):
        Emulator(api_key=KEY, mode="throughput", parse_processes=0)
    with pytest.raises(ValueError, match="at least 1"):
        Emulator(api_key=KEY, mode="throughput", parse_processes=True)
    with pytest.raises(ValueError, match="throughput mode only"):
        Emulator(api_key=KEY, mode="store", parse_processes=2)
    with pytest.raises(ValueError, match="at least 2"):
        ParsePool(1)
    one = Emulator(api_key=KEY, mode="store", parse_processes=1)  # the default: no pool
    assert one.parse_processes == 1


def test_the_command_line_passes_parse_processes(monkeypatch):
    monkeypatch.setenv("CLOUDZERO_API_KEY", KEY)
    args = cli.parser().parse_args(["--mode", "throughput", "--parse_processes", "2"])
    assert cli._build_from_args(args).parse_processes == 2
    assert cli._build_from_args(cli.parser().parse_args([])).parse_processes == 1
