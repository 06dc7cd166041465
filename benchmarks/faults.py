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
`Decimal` sums computed by the generator) are printed. Then two scenarios on one shared
`--state_path`, each against a fresh emulator with 150 ms latency:

4. two runs started together (an orchestrator retrying a live attempt);
5. a crash loop: `--kills` runs SIGKILLed at random moments (1.5 to 5 s after each run's first
   POST, so that every kill lands while sending) under 20%
   application 5xx (cached to their key) and 10% applied-then-dropped answers, then a run
   to the end.

Exit status 0 when runs 1 and 2 are exact and run 2 posted nothing, and both scenarios end
exact with exit 0 and no concurrency violation.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from benchmarks import generate
from benchmarks.run import DATA_DIR, PYTHON, ROOT, EmulatorProcess, render_table, verify

FAULTS = {"rate_5xx": 0.15, "rate_front_5xx": 0.15, "retry_after_front_5xx": 0.05, "rate_drop_after_apply": 0.10}
KEY = "faults-benchmark-key-0123456789"


CRASH_FAULTS = {"rate_5xx": 0.2, "rate_drop_after_apply": 0.1}


def start_cli(data, url, folder, max_body_bytes, log_path, *extra):
    """Start the command line from `folder`, in its own process group (so a kill takes it all)."""
    os.makedirs(folder, exist_ok=True)
    command = [PYTHON, "-m", "pipeline", "--input", os.path.join(data, "parquet", "*.parquet"),
               "--stream_column", "connection_id", "--api_url", url, "--max_body_bytes", str(max_body_bytes),
               "--report_path", os.path.join(folder, "report.json"), "--runner=DirectRunner", *extra]
    env = dict(os.environ, CLOUDZERO_API_KEY=KEY, PYTHONPATH=ROOT)
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def run_cli(data, url, folder, max_body_bytes, log_path, *extra):
    """One run of the command line from `folder`: (exit status, its report)."""
    code = start_cli(data, url, folder, max_body_bytes, log_path, *extra).wait(timeout=1800)
    with open(os.path.join(folder, "report.json")) as handle:
        return code, json.load(handle)


def overlapping_runs(data, work, args, expected):
    """Two runs started together on one ledger: (table row, ok)."""
    folder = os.path.join(work, "overlap")
    state = os.path.join(folder, "state")
    with EmulatorProcess(KEY, os.path.join(work, "emulator-overlap.log"), mode="store", latency=0.15) as emulator:
        runs = [start_cli(data, emulator.url, os.path.join(folder, name), args.max_body_bytes,
                          os.path.join(folder, f"{name}.log"), "--state_path", state) for name in ("a", "b")]
        codes = [run.wait(timeout=1800) for run in runs]
        stats = emulator.stats()
    problems = verify(stats, expected)
    row = ("two runs at once, one ledger", "/".join(map(str, codes)), f"{stats['post_count']:,}", "-",
           f"{stats['concurrency_violations']}", "exact" if not problems else f"NOT EXACT: {problems[0]}")
    return row, codes == [0, 0] and not problems


def crash_loop(data, work, args, expected):
    """`args.kills` SIGKILLs at random moments, then a run to the end: (table row, ok)."""
    folder = os.path.join(work, "crash-loop")
    state = os.path.join(folder, "state")
    rng = random.Random(args.seed)
    with EmulatorProcess(KEY, os.path.join(work, "emulator-crash.log"), mode="store", latency=0.15,
                         faults=CRASH_FAULTS, seed=args.seed) as emulator:
        landed = 0
        for kill in range(args.kills):
            posts = emulator.stats()["post_count"]
            run = start_cli(data, emulator.url, os.path.join(folder, str(kill)), args.max_body_bytes,
                            os.path.join(folder, f"{kill}.log"), "--state_path", state, "--read_timeout", "3")
            while run.poll() is None and emulator.stats()["post_count"] == posts:
                time.sleep(0.1)  # Beam's start-up: the kill is timed from the first POST
            try:
                run.wait(timeout=rng.uniform(1.5, 5.0))
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
                landed += emulator.stats()["post_count"] > posts
        code, _ = run_cli(data, emulator.url, os.path.join(folder, "final"), args.max_body_bytes,
                          os.path.join(folder, "final.log"), "--state_path", state, "--read_timeout", "3")
        stats = emulator.stats()
    problems = verify(stats, expected)
    row = (f"crash loop: {args.kills} SIGKILLs ({landed} while sending), then a run to the end", str(code),
           f"{stats['post_count']:,}", f"{stats['applied_drops']:,}", f"{stats['concurrency_violations']}",
           "exact" if not problems else f"NOT EXACT: {problems[0]}")
    return row, code == 0 and not problems


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max_body_bytes", type=int, default=100_000, help="small bodies: many of them")
    parser.add_argument("--data", default=DATA_DIR, help="where generated data is cached")
    parser.add_argument("--runs", type=int, choices=(2, 3), default=3,
                        help="2 leaves out the rerun from another folder (the slow one: it backs off)")
    parser.add_argument("--kills", type=int, default=15, help="SIGKILLs of the crash loop")
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
    scenarios = []
    for scenario in (overlapping_runs, crash_loop):
        row, passed = scenario(data, work, args, expected)
        scenarios.append(row)
        ok = ok and passed
    print(render_table(("scenario (one shared --state_path)", "exit", "POSTs", "applied", "concurrency violations",
                        "emulator totals"), scenarios))
    print(f"logs and reports: {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
