"""Exactly once under faults: the command line against an emulator that fails, replays and drops.

    python -m benchmarks.faults [--rows 60000] [--seed 7] [--max_body_bytes 100000] [--runs 3] [--data DIR]

The emulator caches the first answer to each idempotency key, errors included, as CloudZero
does, and injects (seeded) application 5xx (cached), load-balancer 5xx with Retry-After (never
cached) and "applied, then the connection dropped". Three runs of `python -m pipeline` over the
same generated rows, with no --state_path, so the default ledger under
./cloudzero-runs/state/<API> is what keeps them exact:

1. a first run, from folder A;
2. a rerun from folder A: it finds every body in the ledger and posts nothing;
3. a rerun from folder B, whose ledger is empty: it cannot know which keys run 1 used, so a
   body that run 1 moved past a load balancer's error is applied again. This is the limit that
   docs/failure-and-rerun.md, "Moves need the ledger", describes; the run shows its size
   instead of hiding it.

Each run's POSTs, key moves, replays and the emulator's totals against expected.json (exact
`Decimal` sums computed by the generator) are printed. Exit status 0 when runs 1 and 2 are
exact and run 2 posted nothing.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchmarks import generate
from benchmarks.run import DATA_DIR, PYTHON, ROOT, EmulatorProcess, render_table, verify

FAULTS = {"rate_5xx": 0.15, "rate_front_5xx": 0.15, "retry_after_front_5xx": 0.05, "rate_drop_after_apply": 0.10}
KEY = "faults-benchmark-key-0123456789"


def run_cli(data, url, folder, max_body_bytes, log_path):
    """One run of the command line from `folder`: (exit status, its report)."""
    os.makedirs(folder, exist_ok=True)
    report = os.path.join(folder, "report.json")
    command = [PYTHON, "-m", "pipeline", "--input", os.path.join(data, "parquet", "*.parquet"),
               "--stream_column", "connection_id", "--api_url", url, "--max_body_bytes", str(max_body_bytes),
               "--report_path", report, "--runner=DirectRunner"]
    env = dict(os.environ, CLOUDZERO_API_KEY=KEY, PYTHONPATH=ROOT)
    with open(log_path, "wb") as log:
        code = subprocess.run(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                              timeout=1800).returncode
    with open(report) as handle:
        return code, json.load(handle)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max_body_bytes", type=int, default=100_000, help="small bodies: many of them")
    parser.add_argument("--data", default=DATA_DIR, help="where generated data is cached")
    parser.add_argument("--runs", type=int, choices=(2, 3), default=3,
                        help="2 leaves out the rerun from another folder (the slow one: it backs off)")
    args = parser.parse_args(argv)

    data = os.path.join(args.data, f"faults-rows-{args.rows}-seed-{args.seed}")
    expected = generate.ensure(data, rows=args.rows, seed=args.seed, connections=3, months=("2024-08",),
                               files=2, csv_copy=False)
    work = tempfile.mkdtemp(prefix="faults-")
    table, ok = [], True
    with EmulatorProcess(KEY, os.path.join(work, "emulator.log"), mode="store", faults=FAULTS,
                         seed=args.seed) as emulator:
        before = emulator.stats()
        runs = (("run 1 (folder A)", "A"), ("rerun (folder A, same ledger)", "A"),
                ("rerun (folder B, empty ledger)", "B"))
        for name, folder in runs[:args.runs]:
            code, report = run_cli(data, emulator.url, os.path.join(work, folder), args.max_body_bytes,
                                   os.path.join(work, f"{len(table) + 1}.log"))
            after = emulator.stats()
            problems = verify(after, expected)
            posts = after["post_count"] - before["post_count"]
            applied = after["applied_drops"] - before["applied_drops"]
            table.append((name, str(code), f"{posts:,}", f"{applied:,}", f"{report['bodies_moved_to_a_new_key']:,}",
                          f"{report['bodies_already_delivered']:,}", f"{after['idempotent_replays']:,}",
                          "exact" if not problems else f"NOT EXACT: {problems[0]}"))
            if len(table) < 3:
                ok = ok and code == 0 and not problems and (len(table) == 1 or posts == 0)
            before = after
    bodies = report["bodies_planned"]
    print(f"{args.rows:,} rows, {bodies} bodies of at most {args.max_body_bytes:,} bytes, faults {json.dumps(FAULTS)}")
    print(render_table(("run", "exit", "POSTs", "applied", "moved to a new key", "already delivered",
                        "replays so far", "emulator totals"), table))
    print(f"logs and reports: {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
