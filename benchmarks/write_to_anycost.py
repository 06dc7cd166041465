"""A user's own Beam pipeline ending in WriteToAnyCost: rows as dicts, or as record batches.

    CLOUDZERO_API_KEY=... python -m benchmarks.write_to_anycost --input 'DATA/parquet/*.parquet' \
        --stream_column connection_id --api_url http://127.0.0.1:PORT --elements dicts

The source stands for any other: it reads the benchmark's Parquet files inside the pipeline
and hands WriteToAnyCost either one dict of Python values per row (`Decimal`, aware
`datetime`, `float`, `str`: what `ReadFromBigQuery` gives), or `pyarrow.RecordBatch`es of
the typed columns (the fast path). Making the dicts is part of the timed run, as it is part
of a user's. On Beam's in-process FnApiRunner, pinned. Prints one JSON line with the result
PCollections' sizes; exits 1 unless every body was delivered and no row was rejected.

With `--sink count` the same source runs with nothing after it (its rows counted by a
metric): the source's own time, which `benchmarks.run` subtracts to show WriteToAnyCost's.
Either way the source also times its own work in the run (reading a batch and, for dicts,
`to_pylist`) and prints it as `source_s`: the same subtraction without a second run, whose
source alone varied by several seconds from run to run on a shared machine.
"""
import argparse
import glob
import json
import os
import sys
import tempfile
import time

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from transforms import WriteToAnyCost

BATCH_ROWS = 65_536
ROWS_READ = Metrics.counter("benchmark", "rows_read")
SOURCE_MICROS = Metrics.counter("benchmark", "source_micros")


def _timed_read(path, convert):
    """`convert(batch)` for each batch of the file; the time spent reading and converting
    (not what consumes the result) is counted in SOURCE_MICROS."""
    batches = pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, use_threads=False)
    while True:
        started = time.perf_counter()
        batch = next(batches, None)
        converted = None if batch is None else convert(batch)
        SOURCE_MICROS.inc(int((time.perf_counter() - started) * 1e6))
        if batch is None:
            return
        ROWS_READ.inc(batch.num_rows)
        yield converted


def record_batches(path):
    return _timed_read(path, lambda batch: batch)


def dict_rows(path):
    for rows in _timed_read(path, lambda batch: batch.to_pylist()):
        yield from rows


def _counter(result, name):
    counters = result.metrics().query(MetricsFilter().with_namespace("benchmark").with_name(name))["counters"]
    return sum(c.committed for c in counters)


def write_counts(_, path, delivered, failed, rejected):
    with open(path, "w") as handle:
        json.dump({"delivered": delivered, "failed": failed, "rejected": rejected}, handle)


def count_only(p):
    """The source alone: its output has no consumer, so only the source runs; its rows are
    counted by a metric it increments once a batch, as it does under WriteToAnyCost."""
    result = p.run()
    result.wait_until_finish()
    print(json.dumps({"sink": "count", "rows": _counter(result, "rows_read"),
                      "source_s": round(_counter(result, "source_micros") / 1e6, 3)}), flush=True)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.write_to_anycost")
    parser.add_argument("--input", required=True)
    parser.add_argument("--stream_column", required=True)
    parser.add_argument("--api_url", required=True)
    parser.add_argument("--elements", choices=("dicts", "batches"), required=True)
    parser.add_argument("--max_body_bytes", type=int, default=5_000_000)
    parser.add_argument("--sink", choices=("write", "count"), default="write",
                        help="write: WriteToAnyCost (default); count: the source alone, its rows counted")
    args = parser.parse_args(argv)
    paths = sorted(glob.glob(args.input))
    counts_path = os.path.join(tempfile.mkdtemp(prefix="write-to-anycost-"), "counts.json")

    p = beam.Pipeline(runner=FnApiRunner())
    rows = (p
            | "Files" >> beam.Create(paths)
            | "Read" >> beam.FlatMap(dict_rows if args.elements == "dicts" else record_batches))
    if args.sink == "count":
        return count_only(p)
    result = rows | "WriteToAnyCost" >> WriteToAnyCost(stream_column=args.stream_column, api_url=args.api_url,
                                                       max_body_bytes=args.max_body_bytes)
    sizes = {name: getattr(result, name) | f"Count{name}" >> beam.combiners.Count.Globally()
             for name in ("delivered", "failed", "rejected")}
    _ = (p
         | "Seed" >> beam.Create([None])
         | "Counts" >> beam.Map(write_counts, counts_path,
                                *(beam.pvalue.AsSingleton(sizes[n]) for n in ("delivered", "failed", "rejected"))))
    run = p.run()
    run.wait_until_finish()
    with open(counts_path) as handle:
        counts = json.load(handle)
    print(json.dumps({"elements": args.elements, "bodies_delivered": counts["delivered"],
                      "bodies_failed": counts["failed"], "rows_rejected": counts["rejected"],
                      "source_s": round(_counter(run, "source_micros") / 1e6, 3)}), flush=True)
    return 0 if counts["delivered"] and not counts["failed"] and not counts["rejected"] else 1


if __name__ == "__main__":
    sys.exit(main())
