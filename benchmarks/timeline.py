"""Where the command line's time goes, phase by phase, median of `--repeat` runs.

    .venv/bin/python -m benchmarks.timeline                 # 1M rows, 3 runs
    .venv/bin/python -m benchmarks.timeline --rows 200000 --repeat 1

Each run is `python -m pipeline` on the benchmark's Parquet files against the emulator in
throughput mode (one body per core parsed at once, as `benchmarks.run`), in a child process
that marks, on its own clock: the end of its imports, every stage the in-process runner
executes (`FnApiRunner._execute_bundle`), every file `ReadCbf` reads, and every create
request. The phases:

- imports: from spawning the child to `pipeline.main` imported;
- start-up: to the first row read (graph construction, translation, the first small stages);
- read and validate: the first file opened to the last one read, with the process's CPU
  over it (200% is both cores);
- stage changes: the last file read to the sink's stage starting, and how many stages ran
  in between (counts, the plan, the gate, the dead letter);
- first bodies: the sink's stage starting to its first create request;
- sending: the first create request to the last answer;
- after: the last answer to the child's exit.

Every run's totals are checked exact against the data, as `benchmarks.run` checks them.
Figures only, never asserted. The marks patch Beam's runner in the child; they cost a few
microseconds a stage.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

_STARTED = time.time()  # the child's first moment (its interpreter is up, nothing imported yet)

PHASES = ("imports", "start-up", "read and validate", "stage changes", "first bodies", "sending", "after")
SEND_STAGE = "WriteBillingDrops/GroupByConnection/Read"  # the sink's stage, after the shuffle


# --------------------------------------------------------------------------------------------
# The child: the command line, with marks
# --------------------------------------------------------------------------------------------

def _cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child(marks_path, pipeline_args):
    marks = []

    def mark(kind, detail=""):
        marks.append((time.time(), kind, detail, _cpu()))

    import pipeline.__main__  # pylint: disable=import-outside-toplevel  # as `python -m pipeline`, and how it ends
    import pipeline.main  # pylint: disable=import-outside-toplevel
    mark("imported")
    from apache_beam.runners.portability.fn_api_runner import fn_runner  # pylint: disable=import-outside-toplevel
    from anycost.delivery.client import AnyCostClient  # pylint: disable=import-outside-toplevel
    from transforms import read  # pylint: disable=import-outside-toplevel

    execute, process, create = fn_runner.FnApiRunner._execute_bundle, read._ReadSplit.process, AnyCostClient.create_drop

    def timed_execute(self, context, bundle, *args, **kwargs):
        mark("stage", bundle.stage.name)
        return execute(self, context, bundle, *args, **kwargs)

    def timed_process(self, split):
        mark("read start", split.path)
        yield from process(self, split)
        mark("read end", split.path)

    def timed_create(self, *args, **kwargs):
        mark("post start")
        try:
            return create(self, *args, **kwargs)
        finally:
            mark("post end")

    fn_runner.FnApiRunner._execute_bundle = timed_execute
    read._ReadSplit.process = timed_process
    AnyCostClient.create_drop = timed_create
    try:
        code = pipeline.main.main(pipeline_args)
    finally:
        with open(marks_path, "w", encoding="utf-8") as handle:
            json.dump({"started": _STARTED, "marks": marks}, handle)
    pipeline.__main__.exit_at_once(code)  # as `python -m pipeline` ends


# --------------------------------------------------------------------------------------------
# The parent: runs, phases, medians
# --------------------------------------------------------------------------------------------

def phases(spawned, exited, marks):
    """Seconds per phase of one run, from its marks (see the module's docstring)."""
    def times(kind):
        return [m for m in marks if m[1] == kind]
    imported = times("imported")[0]
    reads_started, reads_ended, posts = times("read start"), times("read end"), times("post start")
    stages = times("stage")
    send_stage = next(m for m in stages if SEND_STAGE in m[2])
    first_read, last_read = reads_started[0], reads_ended[-1]
    last_answer = times("post end")[-1]
    return {
        "imports": imported[0] - spawned,
        "start-up": first_read[0] - imported[0],
        "read and validate": last_read[0] - first_read[0],
        "read cpu %": 100 * (last_read[3] - first_read[3]) / max(last_read[0] - first_read[0], 1e-9),
        "stage changes": send_stage[0] - last_read[0],
        "stages between": sum(1 for m in stages if last_read[0] < m[0] < send_stage[0]),
        "first bodies": posts[0][0] - send_stage[0],
        "sending": last_answer[0] - posts[0][0],
        "after": exited - last_answer[0],
        "first POST at": posts[0][0] - spawned,
        "wall": exited - spawned,
    }


def one_run(command, env, work):
    marks_path = os.path.join(work, "marks.json")
    child = [command[0], "-m", "benchmarks.timeline", "--child", marks_path, "--"] + command[3:]
    with open(os.path.join(work, "child.log"), "wb") as log:
        spawned = time.time()
        code = subprocess.call(child, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               env=env, stdout=log, stderr=subprocess.STDOUT)
        exited = time.time()
    if code != 0:
        raise SystemExit(f"the command line exited {code}; see {os.path.join(work, 'child.log')}")
    with open(marks_path, encoding="utf-8") as handle:
        return phases(spawned, exited, json.load(handle)["marks"])


def main(argv=None):
    from benchmarks import run  # pylint: disable=import-outside-toplevel
    parser = argparse.ArgumentParser(prog="python -m benchmarks.timeline")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", default=run.DATA_DIR)
    parser.add_argument("--emulator_processes", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    data, expected = run.ensure_data(args.rows, 7, args.data)
    key = os.urandom(16).hex()
    env = dict(os.environ, CLOUDZERO_API_KEY=key, PYTHONUNBUFFERED="1")
    runs = []
    with tempfile.TemporaryDirectory(prefix="anycost-timeline-") as work, \
            run.EmulatorProcess(key, os.path.join(work, "emulator.log"),
                                parse_processes=args.emulator_processes) as emulator:
        for index in range(args.repeat):
            emulator.reset()
            folder = os.path.join(work, f"run-{index + 1}")
            os.makedirs(folder)
            command = run.contender_command("pipeline-parquet", data, emulator.url, folder)
            runs.append(one_run(command, env, folder))
            problems = run.verify(emulator.stats(), expected)
            if problems:  # a fast wrong answer is not a result
                raise SystemExit("the emulator does not hold what the data holds: " + "; ".join(problems[:5]))
    print(f"the command line on {args.rows:,} Parquet rows, {os.cpu_count()} CPUs, "
          f"median of {len(runs)} (min-max):")
    for name in PHASES + ("first POST at", "wall"):
        values = [r[name] for r in runs]
        print(f"  {name:<18} {statistics.median(values):6.2f} s  ({min(values):.2f}-{max(values):.2f})")
    print(f"  read CPU           {statistics.median(r['read cpu %'] for r in runs):6.0f} %")
    print(f"  stages between     {statistics.median(r['stages between'] for r in runs):6.0f}")
    print(json.dumps({"rows": args.rows, "runs": runs}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--child" and sys.argv[3] == "--":
        sys.exit(_child(sys.argv[2], sys.argv[4:]))
    sys.exit(main())
