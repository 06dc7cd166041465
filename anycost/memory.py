"""Big buffers go back to the operating system when they are freed.

A month's rows and its bodies are buffers of megabytes, built by several sending threads at
once. glibc's malloc raises its mmap threshold each time such a buffer is freed, so later
ones come from per-thread heaps that keep the memory: measured on 10 million rows, peak RSS
1,082 MB instead of 777 MB. A fixed threshold (which also stops it moving) keeps every
buffer of 1 MiB or more in its own mapping, returned as soon as it is freed. Elsewhere than
glibc this does nothing.

Arrow's own allocations (the batches being read and normalised, on several threads since
`anycost.in_order`) go through the same malloc: Arrow's default pool, mimalloc, keeps
per-thread heaps that do not shrink back. Measured on 1 million Parquet rows, the command
line's peak RSS was 684 MB with mimalloc and 533 MB with the system pool, at the same
speed (`ARROW_DEFAULT_MEMORY_POOL=mimalloc python -m benchmarks.run --only pipeline-parquet
--repeat 2`, against the same without the variable). A process whose `ARROW_DEFAULT_MEMORY_POOL` is set
keeps the pool it chose. No Beam, no HTTP.
"""
import ctypes
import ctypes.util
import os
import threading

import pyarrow as pa

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 1 << 20

_done = threading.Lock()
_state = {"set": None}


def return_big_buffers():
    """Set the fixed mmap threshold once per process; True when glibc took it."""
    with _done:
        if _state["set"] is None:
            _state["set"] = _set_threshold()
            if _state["set"] and not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
                pa.set_memory_pool(pa.system_memory_pool())
        return _state["set"]


def _set_threshold():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt, Windows)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
