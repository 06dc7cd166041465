"""The emulator's own work for one body, timed alone, median of `--repeat`.

    .venv/bin/python -m benchmarks.emulator_cost

One body of the benchmark's data, packed as `benchmarks.floor` packs it (up to 5,000,000
bytes), through the emulator's own functions: its JSON parse (`wire.decode_json`, orjson),
throughput mode's row and cost count (`store.throughput_batch`), and both as a request runs
them (`parse_pool.count_body`). Times 80 is about what the emulator spends, on
one core, on the 1M-row run's bodies: the floor for every contender's send phase on a
2-core machine. Figures only, never asserted.
"""
import argparse
import glob
import os
import statistics
import sys
import time

from anycost_emulator import parse_pool, store, wire
from benchmarks import floor, run


def _median_ms(fn, repeat):
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def first_body(path):
    """The first body the floor would post for the file's first (connection, month)."""
    groups, _ = floor.read_rows([path], run.STREAM_COLUMN)
    return groups[sorted(groups)[0]].finish()[0]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.emulator_cost")
    parser.add_argument("--rows", type=int, default=1_000_000, help="the generated set to take a file from")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--data", default=run.DATA_DIR)
    args = parser.parse_args(argv)
    data, _ = run.ensure_data(args.rows, 7, args.data)
    path = sorted(glob.glob(os.path.join(data, "parquet", "*.parquet")))[0]

    body = first_body(path)
    parsed, _ = wire.decode_json(body)
    print(f"one body of {len(body):,} bytes, {len(parsed['data']):,} rows, median of {args.repeat}:")
    print(f"  emulator decode_json (orjson) {_median_ms(lambda: wire.decode_json(body), args.repeat):8.1f} ms")
    print(f"  emulator throughput_batch     {_median_ms(lambda: store.throughput_batch(parsed), args.repeat):8.1f} ms")
    print(f"  emulator count_body (both)    {_median_ms(lambda: parse_pool.count_body(body), args.repeat):8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
