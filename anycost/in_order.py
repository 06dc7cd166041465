"""Work on the process's other cores, results handed back in the order it was given.

Normalising a record batch is mostly Arrow kernels, which release the GIL: on 500,000
Parquet rows, 1.31 s on one thread and 0.78 s on two (`python -m benchmarks.normalise_threads`).
A bundle's thread keeps reading the next batch while earlier ones are normalised; the
results come back in submission order, so what a bundle writes, and in which order, does
not depend on the threads. One pool per process, one thread per core, shared by every DoFn
instance in it; `--watch` reads whole files the same way, on a pool of its own. No Beam,
no HTTP.
"""
import collections
import concurrent.futures
import os
import threading

_lock = threading.Lock()
_pool = {"executor": None}


def _shared_pool():
    """One pool per process with a thread per core; None on a single core (work runs inline)."""
    cores = os.cpu_count() or 1
    if cores < 2:
        return None
    with _lock:
        if _pool["executor"] is None:
            _pool["executor"] = concurrent.futures.ThreadPoolExecutor(cores, thread_name_prefix="anycost-normalise")
        return _pool["executor"]


class _Done:
    """A result computed inline, with a future's `result()`."""

    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value

    def done(self):
        return True


class InOrder:
    """Example::

        work = InOrder()
        for batch in batches:
            for note, result in work.submit(normalise, batch, note=batch.order):
                use(note, result)
        for note, result in work.drain():
            use(note, result)

    `submit` runs `fn(*args)` on `pool` (by default the shared one) and gives back, oldest
    first, the results of earlier work that has finished, and of as much more as it takes
    to leave at most `in_flight` pieces pending (so memory holds at most that many batches).
    A piece that raised raises when its turn comes, in the caller's thread. `note` travels
    with its piece untouched (what to emit beside the result)."""

    def __init__(self, in_flight=None, pool=None):
        self._pool = pool if pool is not None else _shared_pool()
        cores = os.cpu_count() or 1
        self._in_flight = in_flight if in_flight is not None else (cores if self._pool else 0)
        self._pending = collections.deque()

    def submit(self, fn, *args, note=None, inline=False):
        """Queue `fn(*args)`; returns [(note, result)] of the oldest pieces now due.

        `inline`: run it here, now, queued in order with the rest. For work that is mostly
        Python (dicts taken apart): on a pool thread it would only fight the caller for the
        GIL (see `transforms.write._NormaliseRows._flush`)."""
        future = self._pool.submit(fn, *args) if self._pool and not inline else _Done(fn(*args))
        self._pending.append((note, future))
        due = []
        while self._pending and (len(self._pending) > self._in_flight or self._pending[0][1].done()):
            due.append(self._take_oldest())
        return due

    def drain(self):
        """[(note, result)] of every pending piece, oldest first."""
        done = []
        while self._pending:
            done.append(self._take_oldest())
        return done

    def _take_oldest(self):
        note, future = self._pending.popleft()
        return note, future.result()
