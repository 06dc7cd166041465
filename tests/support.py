"""Shared helpers for end-to-end tests: write inputs, run the real CLI in-process, read results."""
import csv
import io
import json
import os
import tempfile
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import main as cli

TEST_KEY = "test-key-5f1c0b9e77"
PINNED_RUNNER = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]


def write_csv(path, header, rows, gzip_it=False):
    """A CBF CSV file; `rows` are lists of text in header order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    if gzip_it:
        import gzip
        data = gzip.compress(data)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def write_parquet(path, columns, row_group_size=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def run_cli(args, capsys=None):
    """Run `python -m pipeline` in this process on the pinned in-memory runner.

    Returns (exit_code, report dict or None, printed text).
    """
    report_path = None
    for arg in args:
        if arg.startswith("--report_path="):
            report_path = arg.split("=", 1)[1]
    # Default output locations are relative to the working directory: keep them out of the repo.
    here = os.getcwd()
    os.chdir(tempfile.mkdtemp(prefix="cloudzero-test-run-"))
    try:
        code = cli.main(list(args) + PINNED_RUNNER)
    finally:
        os.chdir(here)
    printed = ""
    if capsys is not None:
        captured = capsys.readouterr()
        printed = captured.out + captured.err
    report = None
    if report_path and os.path.exists(report_path):
        with open(report_path) as handle:
            report = json.load(handle)
    return code, report, printed


def expected_totals(rows_by_stream_month):
    """{conn: {month: (rows, Decimal cost)}} from a list of (conn, month, cost text)."""
    totals = {}
    for conn, month, cost in rows_by_stream_month:
        rows, total = totals.setdefault(conn, {}).get(month, (0, Decimal(0)))
        totals[conn][month] = (rows + 1, total + Decimal(cost))
    return totals


def emulator_totals(emulator):
    """The emulator's totals as {conn: {month: (rows, Decimal cost)}}."""
    return {conn: {month: (entry["rows"], Decimal(entry["cost"])) for month, entry in months.items()}
            for conn, months in emulator.totals().items()}


def read_dead_letters(report):
    records = []
    for path in report["dead_letter_files"]:
        with open(path) as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    return records


def run_and_collect(p, result, out):
    """Run pipeline `p`; the contents of a WriteToAnyCostResult's three PCollections, as
    the dicts they hold, read back from the files the pipeline wrote under `out`."""
    import apache_beam as beam
    names = ("delivered", "failed", "rejected")
    for name in names:
        (getattr(result, name)
         | f"Json{name}" >> beam.Map(json.dumps, sort_keys=True)
         | f"Write{name}" >> beam.io.WriteToText(str(out / name), shard_name_template=""))
    p.run().wait_until_finish()
    return {name: [json.loads(line) for line in open(out / name)] for name in names}
