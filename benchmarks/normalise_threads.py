"""Validating record batches on one thread and on the process's cores, side by side.

    .venv/bin/python -m benchmarks.normalise_threads              # 500,000 rows of the 1M set
    .venv/bin/python -m benchmarks.normalise_threads --files 8    # all of it

The batches of the benchmark's typed Parquet files are read once, then normalised (what
`WriteToAnyCost` does to each batch of a bundle) inline and through `anycost.in_order` on a
pool of one thread per core, alternately, `--repeat` rounds; the medians are printed.
Figures only, never asserted; the chunks of both ways are checked to be the same.
"""
import argparse
import concurrent.futures
import glob
import os
import statistics
import sys
import time

from anycost import in_order
from anycost.config import RowSettings
from anycost.inputs import normalise, readers, sources
from benchmarks import run


def read_batches(paths, settings):
    """The files' text batches, as `ReadCbf` hands them on: (batch, SourceBatch)."""
    out = []
    for path in paths:
        with open(path, "rb") as handle:
            for index, text in enumerate(readers.read_batches(handle, path, "parquet", None,
                                                              **sources.reader_options(settings))):
                prepared = sources.prepare(text.batch, settings).batch
                out.append((prepared, normalise.SourceBatch(path, (0, index), text.row_numbers)))
    return out


def normalise_all(batches, settings, work):
    chunks = []
    for batch, source in batches:
        chunks += [c for _, result in work.submit(normalise.normalise_batch, batch, source, settings)
                   for c in result.chunks]
    return chunks + [c for _, result in work.drain() for c in result.chunks]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.normalise_threads")
    parser.add_argument("--rows", type=int, default=1_000_000, help="the generated set to take files from")
    parser.add_argument("--files", type=int, default=4, help="how many of its 8 files")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", default=run.DATA_DIR)
    args = parser.parse_args(argv)
    data, _ = run.ensure_data(args.rows, 7, args.data)
    paths = sorted(glob.glob(os.path.join(data, "parquet", "*.parquet")))[:args.files]
    settings = RowSettings(stream_column=run.STREAM_COLUMN)
    batches = read_batches(paths, settings)
    rows = sum(batch.num_rows for batch, _ in batches)
    cores = os.cpu_count() or 1
    times = {"one thread": [], f"{cores} threads": []}
    results = {}
    with concurrent.futures.ThreadPoolExecutor(cores) as pool:
        for _ in range(args.repeat):
            for name, work in (("one thread", in_order.InOrder(pool=None, in_flight=0)),
                               (f"{cores} threads", in_order.InOrder(pool=pool, in_flight=cores))):
                started = time.perf_counter()
                results[name] = normalise_all(batches, settings, work)
                times[name].append(time.perf_counter() - started)
    same = len({tuple(chunks) for chunks in results.values()}) == 1
    print(f"{rows:,} rows in {len(batches)} batches, {cores} CPUs, median of {args.repeat}:")
    for name, seconds in times.items():
        print(f"  {name:<12} {statistics.median(seconds):6.2f} s")
    print("chunks identical" if same else "MISMATCH: the two ways gave different chunks")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
