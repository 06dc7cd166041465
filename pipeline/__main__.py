"""Entry point: `python -m pipeline ...`, and the `py_file` Airflow's Beam operator runs."""
import os
import sys

if __package__ in (None, ""):  # run as a file (py_file=.../pipeline/__main__.py): find the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import logging  # noqa: E402

# Beam warns on the root logger, at import, that optional Google client libraries are absent;
# that is expected without the [gcp] extra, so keep it off a user's terminal.
logging.getLogger().addFilter(lambda record: "apitools not found" not in record.getMessage())

from pipeline.main import main  # noqa: E402


def exit_at_once(code):
    """End the process as soon as the run is over, without the interpreter's teardown.

    When `main` returns, the job has ended and every file it wrote is closed (the report, the
    ledger, the dead letter: each is written in a `with` block, through Beam's FileSystems).
    What is left is freeing the run's heap and its modules one object at a time, for nothing
    (the "after" phase of `python -m benchmarks.timeline`). The logs and the terminal are
    flushed first."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_at_once(main())
