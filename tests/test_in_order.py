"""anycost.in_order: work on the process's cores, results back in submission order."""
import concurrent.futures
import threading
import time

import pytest

from anycost import in_order


@pytest.fixture
def pool():
    with concurrent.futures.ThreadPoolExecutor(4) as executor:
        yield executor


def test_results_come_back_in_submission_order_whatever_finishes_first(pool):
    work = in_order.InOrder(in_flight=3, pool=pool)
    delays = [0.2, 0.0, 0.1, 0.0, 0.15, 0.0]
    got = []
    for index, delay in enumerate(delays):
        got += work.submit(lambda i, d: (time.sleep(d), i)[1], index, delay, note=f"n{index}")
    got += work.drain()
    assert got == [(f"n{i}", i) for i in range(len(delays))]


def test_no_more_than_in_flight_pieces_are_pending(pool):
    """Unfinished pieces stay pending up to the bound; one more makes the caller wait for the oldest."""
    gates = [threading.Event() for _ in range(3)]
    work = in_order.InOrder(in_flight=2, pool=pool)
    assert work.submit(lambda: gates[0].wait(5) and 1) == []
    assert work.submit(lambda: gates[1].wait(5) and 2) == []
    threading.Timer(0.2, gates[0].set).start()
    assert work.submit(lambda: gates[2].wait(5) and 3) == [(None, 1)]  # waited for the oldest
    gates[1].set()
    gates[2].set()
    assert work.drain() == [(None, 2), (None, 3)]
    assert work.drain() == []


def test_finished_pieces_come_back_at_once_oldest_first(pool):
    gate = threading.Event()
    work = in_order.InOrder(in_flight=5, pool=pool)
    got = work.submit(lambda: "a")
    time.sleep(0.2)  # "a" is done: out with this submit at the latest, far under the bound
    assert got + work.submit(lambda: gate.wait(5) and "b") == [(None, "a")]
    assert work.submit(lambda: "c") == []  # done too, but behind "b", which is not
    gate.set()
    assert work.drain() == [(None, "b"), (None, "c")]


def test_pieces_overlap_on_the_pool(pool):
    """Two pieces that each wait for the other can only both finish if they run at once."""
    both = threading.Barrier(2, timeout=5)
    work = in_order.InOrder(in_flight=2, pool=pool)
    got = work.submit(both.wait) + work.submit(both.wait)
    assert len(got + work.drain()) == 2  # a BrokenBarrierError here would mean they ran one by one


def test_an_error_is_raised_in_the_callers_thread_when_its_turn_comes(pool):
    def fail():
        raise ValueError("bad batch")
    gate = threading.Event()
    work = in_order.InOrder(in_flight=2, pool=pool)
    assert work.submit(lambda: gate.wait(5) and "first") == []
    assert work.submit(fail) == []  # failed already, but behind a piece that has not finished
    gate.set()
    with pytest.raises(ValueError, match="bad batch"):
        work.drain()


def test_on_one_core_work_runs_inline(monkeypatch):
    monkeypatch.setattr(in_order.os, "cpu_count", lambda: 1)
    work = in_order.InOrder()
    caller = threading.get_ident()
    assert work.submit(threading.get_ident, note="x") == [("x", caller)]


def test_inline_work_runs_in_the_callers_thread_and_keeps_its_place(pool):
    work = in_order.InOrder(in_flight=3, pool=pool)
    caller = threading.get_ident()
    work.submit(lambda: (time.sleep(0.1), "pooled")[1], note=1)
    work.submit(threading.get_ident, note=2, inline=True)
    got = work.drain()
    assert got == [(1, "pooled"), (2, caller)]
