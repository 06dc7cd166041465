"""Throughput mode's bodies parsed on worker processes, so that parallel requests are parsed
in parallel.

CloudZero serves different connections' requests on its own machines, at the same time. In
one process the emulator parses every body under one GIL, one after another: a client that
sends several connections at once (as the connector does) then queues behind itself, while
one that sends a body at a time loses nothing, and a benchmark measures the emulator's
queue instead of the client. `ParsePool(n)` parses up to `n` bodies at once: one in this
process, the others on `n - 1` worker processes, spawned (never forked: the server runs
threads). Only throughput mode uses it: its answer to a body is a small
`Batch` (counts per hour), while store mode keeps every row in this process.
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import threading
import time
from typing import Optional, Union

from anycost_emulator.store import Batch, throughput_batch
from anycost_emulator.wire import decode_json


def count_body(data: Optional[bytes]) -> Union[Batch, str]:
    """A create body's bytes -> its `Batch` (rows and exact cost per hour), or the 400's message.
    The same answer wherever it runs: in the request's thread or on a worker process."""
    obj, problem = decode_json(data)
    if problem:
        return problem
    return throughput_batch(obj)


def _started(seconds: float) -> None:
    """Warm-up work: held long enough that each worker gets one, so all are up before serving."""
    time.sleep(seconds)


class ParsePool:
    """`count(data)` parses up to `processes` bodies at once. A body is parsed in the caller's
    thread when this process is parsing nothing else, as a single-process emulator would (a
    client that sends one body at a time pays nothing extra); otherwise on one of
    `processes - 1` spawned workers, while its thread waits without the GIL. `close()` stops them."""

    def __init__(self, processes: int) -> None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 2:
            raise ValueError("a parse pool needs at least 2 processes (1 parses in the request's thread)")
        self._here = threading.Lock()  # held while this process parses a body
        self._executor = concurrent.futures.ProcessPoolExecutor(
            processes - 1, mp_context=multiprocessing.get_context("spawn"))
        # Start every worker now: the first requests must not wait for an interpreter to start.
        for future in [self._executor.submit(_started, 0.2) for _ in range(processes - 1)]:
            future.result()

    def count(self, data: Optional[bytes]) -> Union[Batch, str]:
        if self._here.acquire(blocking=False):
            try:
                return count_body(data)
            finally:
                self._here.release()
        return self._executor.submit(count_body, data).result()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
