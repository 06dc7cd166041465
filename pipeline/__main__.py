"""Entry point: `python -m pipeline ...`, and the `py_file` Airflow's Beam operator runs."""
import os
import sys

if __package__ in (None, ""):  # run as a file (py_file=.../pipeline/__main__.py): find the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
