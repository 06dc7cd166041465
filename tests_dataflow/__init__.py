"""Dataflow job-graph tests: run only in .venv-gcp (scripts/dataflow_check.sh), never by tests/."""
