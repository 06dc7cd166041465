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

if __name__ == "__main__":
    sys.exit(main())
