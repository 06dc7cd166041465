"""A stop the person running the job asked for (Ctrl-C): send no more bodies.

The command line's signal handler and the in-process runner's sending threads share only
the process, so the request is one process-wide flag. A sender checks it between bodies and
after a wait for a retry; the request in flight is never cut off, so its answer reaches
the ledger. On a remote runner nothing sets it and it costs nothing.
"""
import threading

STOPPED_BY_USER = "not sent: stopped by the user"

_REQUESTED = threading.Event()


def request():
    _REQUESTED.set()


def requested():
    return _REQUESTED.is_set()


def clear():
    _REQUESTED.clear()
