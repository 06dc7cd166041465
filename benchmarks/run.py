"""Run the benchmarks side by side and print the figures.

    .venv/bin/python -m benchmarks.run                      # floor, naive Beam, pipeline on Parquet and CSV
    .venv/bin/python -m benchmarks.run --rows 200000 --only floor,pipeline-parquet
    .venv/bin/python -m benchmarks.run --scaling            # the pipeline at 1M, 4M and 10M rows (10 to 100 streams)
    .venv/bin/python -m benchmarks.run --streams            # 8 connections x 4 bodies at 200 ms a request
    .venv/bin/python -m benchmarks.run --profile            # the pipeline on Parquet under py-spy
    .venv/bin/python -m benchmarks.run --baseline main      # also the connector's contenders as committed on main

Data is generated once per (rows, seed) into benchmarks/data/ and reused. The AnyCost emulator
runs as a subprocess on 127.0.0.1 in throughput mode (it counts rows and sums costs exactly, it
does not store rows) and is reset before every contender. Each contender is a child process:
its wall time is measured from spawn to exit, its peak RSS and CPU time come from `os.wait4`
on that child alone. After each run the emulator's rows and exact cost total per (connection,
month) are compared with expected.json: any difference prints MISMATCH and the exit status is
1, because a fast wrong answer is not a result. Figures are printed, never asserted; every run
is also written as JSON under benchmarks/results/.
"""
import argparse
import datetime as dt
import json
import math
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from decimal import Decimal

from benchmarks import generate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "benchmarks")
DATA_DIR = os.path.join(HERE, "data")
RESULTS_DIR = os.path.join(HERE, "results")
PYTHON = sys.executable
# Where children import `pipeline` and `transforms` from: the working tree, or (by default, set
# in main) a frozen copy taken at the start of the run, so that edits made while a benchmark
# runs cannot mix two versions of the code into one table.
CODE_DIR = ROOT
STREAM_COLUMN = generate.STREAM_COLUMN

CONTENDERS = ("floor", "naive-beam", "pipeline-parquet", "pipeline-csv", "write-dicts", "write-batches",
              "source-dicts", "source-batches")
# Contenders that also run on a baseline's code with --baseline (the connector's own paths).
BASELINE_CONTENDERS = ("pipeline-parquet", "write-dicts", "write-batches")
OPTIONAL_CONTENDERS = ("floor-keep-rows",)  # only with --only
SCALING_ROWS = (1_000_000, 4_000_000, 10_000_000)
# Rows of one stream-month in the scaling data (≈18 MB of JSON): more rows mean more
# connections, so that no stream-month passes CloudZero's 70 MB, as a real bill's would not.
SCALING_ROWS_PER_STREAM_MONTH = 50_000
STREAMS_CONNECTIONS = 8
STREAMS_BODIES = 4
STREAMS_LATENCY = 0.2
STREAMS_ROWS_PER_CONNECTION = 2_000
PROFILE_RATE = 200
PACKAGES_UNDER_TEST = ("anycost", "pipeline", "transforms")


def rel(path):
    """A path relative to the repository when it is inside it, else absolute."""
    path = os.path.abspath(path)
    return os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path


def log(message=""):
    print(message, flush=True)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

def data_dir(rows, seed, root=DATA_DIR, connections=generate.DEFAULT_CONNECTIONS):
    more = "" if connections == generate.DEFAULT_CONNECTIONS else f"-connections-{connections}"
    return os.path.join(root, f"rows-{rows}-seed-{seed}{more}")


def ensure_data(rows, seed, root=DATA_DIR, connections=generate.DEFAULT_CONNECTIONS, csv_copy=True):
    path = data_dir(rows, seed, root, connections)
    expected = generate.ensure(path, rows=rows, seed=seed, connections=connections, csv_copy=csv_copy, log=log)
    return path, expected


def scaling_connections(rows, months=len(generate.DEFAULT_MONTHS)):
    """Connections for `rows` so that a stream-month holds about SCALING_ROWS_PER_STREAM_MONTH."""
    return max(generate.DEFAULT_CONNECTIONS, math.ceil(rows / (months * SCALING_ROWS_PER_STREAM_MONTH)))


# --------------------------------------------------------------------------------------------
# The emulator as a subprocess
# --------------------------------------------------------------------------------------------

class EmulatorProcess:
    """`python -m anycost_emulator` on a free loopback port; stopped with SIGTERM by its own pid."""

    def __init__(self, key, log_path, mode="throughput", latency=0.0, faults=None, seed=0, parse_processes=1):
        self.key, self.log_path, self.mode, self.latency = key, log_path, mode, latency
        self.parse_processes = parse_processes  # throughput mode: bodies parsed at once, on as many processes
        self.faults, self.seed = faults, seed  # faults: FaultConfig fields, as the emulator's --faults
        self.process, self.url = None, None

    def __enter__(self):
        self._dir = tempfile.mkdtemp(prefix="anycost-emulator-")
        port_file = os.path.join(self._dir, "port")
        env = dict(os.environ, CLOUDZERO_API_KEY=self.key)
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [PYTHON, "-m", "anycost_emulator", "--port", "0", "--port_file", port_file, "--mode", self.mode,
             "--latency", str(self.latency), "--seed", str(self.seed)]
            + (["--faults", json.dumps(self.faults)] if self.faults else [])
            + (["--parse_processes", str(self.parse_processes)] if self.parse_processes > 1 else []),
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if os.path.exists(port_file) and open(port_file).read().strip():
                break
            if self.process.poll() is not None:
                raise RuntimeError(f"the emulator exited ({self.process.returncode}); see {self.log_path}")
            time.sleep(0.05)
        else:
            raise RuntimeError(f"the emulator did not start in 30 s; see {self.log_path}")
        with open(port_file) as handle:
            self.url = f"http://127.0.0.1:{int(handle.read().strip())}"
        shutil.rmtree(self._dir, ignore_errors=True)
        return self

    def __exit__(self, *exc):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def _call(self, method, name):
        request = urllib.request.Request(f"{self.url}/_emulator/{name}", method=method,
                                         data=b"" if method == "POST" else None)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def reset(self):
        self._call("POST", "reset")

    def stats(self):
        return self._call("GET", "stats")

    def cpu_seconds(self):
        """User + system CPU the emulator and its parse processes have used so far (from /proc)."""
        own = _cpu_ticks(self.process.pid)
        if own is None:
            return None
        children = (_cpu_ticks(pid) for pid in _children(self.process.pid))
        return (own + sum(ticks for ticks in children if ticks is not None)) / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()


def _cpu_ticks(pid):
    """utime + stime of a live process, in clock ticks (None once it is gone)."""
    try:
        fields = _stat_fields(pid)
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid):
    """The live processes whose parent is `pid`."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if int(_stat_fields(name)[1]) == pid:
                    found.append(int(name))
            except (OSError, ValueError, IndexError):
                continue
    return found


class InProcessEmulator:
    """The same emulator in this process (for --streams, which needs each request's timing)."""

    def __init__(self, key, latency):
        from anycost_emulator import Emulator  # pylint: disable=import-outside-toplevel
        self.emulator = Emulator(api_key=key, mode="throughput", latency_seconds=latency)

    def __enter__(self):
        self.emulator.start()
        self.url = self.emulator.url
        return self

    def __exit__(self, *exc):
        self.emulator.stop()

    def reset(self):
        self.emulator.reset()

    def stats(self):
        return self.emulator.stats()

    def create_window(self):
        """(seconds from the first POST's arrival to the last POST's answer, number of POSTs)."""
        posts = [r for r in self.emulator.requests if r.method == "POST"]
        if not posts:
            return 0.0, 0
        return max(r.ended for r in posts) - min(r.started for r in posts), len(posts)


# --------------------------------------------------------------------------------------------
# Children: wall time, peak RSS and CPU of one process
# --------------------------------------------------------------------------------------------

def _vm_rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def run_child(command, env, log_path, timeout, sample_every=0.25, code_dir=None):
    """Run `command`, wait for it with os.wait4 (its own rusage, not the cumulative
    RUSAGE_CHILDREN), and return wall seconds, exit code, peak RSS in MB and CPU seconds,
    plus an RSS timeline sampled from /proc (to see which phase holds the memory)."""
    with open(log_path, "wb") as handle:
        handle.write((" ".join(command) + "\n\n").encode())
        handle.flush()
        started_at = time.time()
        started = time.perf_counter()
        env = dict(env)
        code_dir = code_dir or CODE_DIR
        if code_dir != ROOT:  # `python -m` puts the cwd first on sys.path: the frozen copy wins
            env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
        process = subprocess.Popen(command, cwd=code_dir, env=env, stdout=handle, stderr=subprocess.STDOUT)
        timed_out, done, timeline = threading.Event(), threading.Event(), []

        def kill():
            timed_out.set()
            try:
                os.kill(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        def sample():
            while not done.wait(sample_every):
                rss = _vm_rss_mb(process.pid)
                if rss is not None:
                    timeline.append((round(time.perf_counter() - started, 2), round(rss)))

        timer = threading.Timer(timeout, kill)
        timer.start()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
            done.set()
        wall = time.perf_counter() - started
        sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit_code": process.returncode,
        "timed_out": timed_out.is_set(),
        "wall_s": round(wall, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "log": rel(log_path),
        "started_at": started_at,
        "rss_timeline": timeline,
    }


def pipeline_phases(log_path, started_at):
    """Seconds from the child's start to its first and last 'delivered' log line (pipeline only)."""
    stamps = []
    try:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if " delivered: " in line and " INFO " in line:
                    when = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                    stamps.append(when.timestamp() - started_at)
    except (OSError, ValueError):
        return None
    if not stamps:
        return None
    return {"first_post_s": round(min(stamps), 2), "last_post_s": round(max(stamps), 2)}


def last_json_line(log_path):
    try:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            lines = [line for line in handle if line.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def contender_command(name, data, url, work, max_body_bytes=None, extra=()):
    name = name.split("@")[0]  # pipeline-parquet@main: the same command on a baseline's code
    parquet = os.path.join(data, "parquet", "*.parquet")
    csv_files = os.path.join(data, "csv", "*.csv")
    common = ["--stream_column", STREAM_COLUMN, "--api_url", url]
    if max_body_bytes:
        common += ["--max_body_bytes", str(max_body_bytes)]
    if name == "floor":
        return [PYTHON, "-m", "benchmarks.floor", "--input", parquet] + common
    if name == "floor-keep-rows":
        return [PYTHON, "-m", "benchmarks.floor", "--keep_rows", "--input", parquet] + common
    if name == "naive-beam":
        return [PYTHON, "-m", "benchmarks.naive_pipeline", "--input", parquet] + common
    if name in ("pipeline-parquet", "pipeline-csv"):
        source = parquet if name == "pipeline-parquet" else csv_files
        return ([PYTHON, "-m", "pipeline", "--input", source] + common
                + ["--report_path", os.path.join(work, "report.json"),
                   "--dead_letter_path", os.path.join(work, "rejected", "rows"),
                   # each run sends the rows afresh: a ledger of its own (a real run writes one too)
                   "--state_path", tempfile.mkdtemp(prefix="ledger-", dir=work),
                   "--runner=DirectRunner"] + list(extra))
    if name in ("write-dicts", "write-batches", "source-dicts", "source-batches"):
        return ([PYTHON, "-m", "benchmarks.write_to_anycost", "--input", parquet, "--elements",
                 name.split("-")[1]] + common + (["--sink", "count"] if name.startswith("source-") else []))
    raise ValueError(f"unknown contender {name!r}; known: {', '.join(CONTENDERS)}")


# --------------------------------------------------------------------------------------------
# Verification: what arrived against expected.json
# --------------------------------------------------------------------------------------------

def verify(stats, expected):
    """Problems (empty when the emulator holds exactly the expected rows and costs)."""
    problems = []
    totals = stats.get("totals") or {}
    want = expected["streams"]
    for connection in sorted(set(want) | set(totals)):
        for month in sorted(set(want.get(connection, {})) | set(totals.get(connection, {}))):
            got = totals.get(connection, {}).get(month)
            exp = want.get(connection, {}).get(month)
            if got is None:
                problems.append(f"{connection} {month}: nothing arrived (expected {exp['rows']} rows)")
            elif exp is None:
                problems.append(f"{connection} {month}: {got['rows']} unexpected rows arrived")
            elif got["rows"] != exp["rows"] or Decimal(got["cost"]) != Decimal(exp["cost"]):
                problems.append(f"{connection} {month}: {got['rows']} rows, cost {got['cost']}; "
                                f"expected {exp['rows']} rows, cost {exp['cost']}")
    if stats.get("concurrency_violations"):
        problems.append(f"{stats['concurrency_violations']} concurrency violation(s): two requests in "
                        "flight for one connection")
    return problems


def emulator_summary(stats):
    bodies = sum(m.get("bodies", 0) for months in (stats.get("totals") or {}).values() for m in months.values())
    return {"bodies": bodies, "posts": stats.get("post_count"), "status_counts": stats.get("status_counts"),
            "max_body_bytes_seen": stats.get("max_body_bytes_seen"),
            "concurrency_violations": stats.get("concurrency_violations")}


def run_contender(name, data, expected, emulator, key, work_root, timeout, max_body_bytes=None, wrap=(),
                  code_dir=None):
    """Reset the emulator, run one contender, verify; returns its result record. `code_dir`:
    where the child imports the connector from (a baseline's export), else CODE_DIR."""
    work = os.path.join(work_root, name)
    os.makedirs(work, exist_ok=True)
    emulator.reset()
    command = list(wrap) + contender_command(name, data, emulator.url, work, max_body_bytes)
    env = dict(os.environ, CLOUDZERO_API_KEY=key, PYTHONUNBUFFERED="1")
    result = {"contender": name, "rows": expected["rows"]}
    cpu_before = getattr(emulator, "cpu_seconds", lambda: None)()
    result.update(run_child(command, env, os.path.join(work, "output.log"), timeout, code_dir=code_dir))
    cpu_after = getattr(emulator, "cpu_seconds", lambda: None)()
    stats = emulator.stats()
    result["emulator"] = emulator_summary(stats)
    if cpu_before is not None and cpu_after is not None:
        result["emulator"]["cpu_s"] = round(cpu_after - cpu_before, 2)
    printed = last_json_line(os.path.join(work, "output.log"))
    if printed:
        result["child_says"] = printed
    if name.startswith("source-"):  # the source alone: its rows counted, nothing sent
        counted = (printed or {}).get("rows")
        problems = [] if counted == expected["rows"] else [f"the source gave {counted} rows, not {expected['rows']}"]
    else:
        problems = verify(stats, expected)
    if result["exit_code"] != 0:
        problems.insert(0, f"exit code {result['exit_code']}" + (" (timed out)" if result["timed_out"] else "")
                        + f"; see {result['log']}")
    result["problems"] = problems
    result["verified"] = not problems
    result["rows_per_s"] = round(expected["rows"] / result["wall_s"]) if result["wall_s"] else None
    if name.startswith("pipeline"):
        result["phases"] = pipeline_phases(os.path.join(work, "output.log"), result["started_at"])
        result["rss_at_first_post_mb"] = _rss_at(result["rss_timeline"], (result["phases"] or {}).get("first_post_s"))
    return result


def _rss_at(timeline, seconds):
    if seconds is None or not timeline:
        return None
    before = [rss for t, rss in timeline if t <= seconds]
    return before[-1] if before else None


def describe(result):
    status = "OK" if result["verified"] else "MISMATCH"
    line = (f"  {result['contender']:<22} {result['wall_s']:8.1f} s  {result['rows_per_s'] or 0:>9,} rows/s  "
            f"{result['peak_rss_mb']:8,.0f} MB  cpu {result['cpu_s']:6.1f} s  "
            f"{result['emulator']['bodies']} bodies  emulator cpu {result['emulator'].get('cpu_s', '?')} s  {status}")
    phases = result.get("phases")
    if phases:
        line += (f"\n      first POST at {phases['first_post_s']:.1f} s, last at {phases['last_post_s']:.1f} s; "
                 f"RSS then {result.get('rss_at_first_post_mb')} MB")
    for problem in result["problems"][:10]:
        line += f"\n      MISMATCH: {problem}"
    return line


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------

def render_table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    out = ["  ".join(str(h).rjust(w) if i else str(h).ljust(w) for i, (h, w) in enumerate(zip(headers, widths)))]
    out.append("  ".join("-" * w for w in widths))
    for row in rows:
        out.append("  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    return "\n".join(out)


def compare_table(summary):
    floor = summary.get("floor")
    rows = []
    for name, entry in summary.items():
        ratio = f"{entry['wall_s'] / floor['wall_s']:.2f}" if floor else "-"
        rows.append((name, f"{entry['wall_s']:.1f}", f"{entry['rows_per_s']:,}", f"{entry['peak_rss_mb']:,.0f}",
                     f"{entry['cpu_s']:.1f}", ratio, entry["bodies"], "OK" if entry["verified"] else "MISMATCH"))
    table = render_table(("contender", "wall s", "rows/s", "peak RSS MB", "CPU s", "x floor", "bodies", "check"),
                         rows)
    shares = write_shares(summary)
    if shares:
        table += ("\n\nWriteToAnyCost's own time: its wall minus the same source run alone (source-dicts or "
                  "source-batches), and its wall minus the source's own timed work in the same run (in-run):\n"
                  + render_table(
                      ("code", "dicts s", "batches s", "dicts / batches", "in-run dicts s", "in-run batches s",
                       "in-run dicts / batches"),
                      [(code, f"{share['dicts_s']:.1f}", f"{share['batches_s']:.1f}", _ratio(share["ratio"]),
                        _seconds(share.get("dicts_in_run_s")), _seconds(share.get("batches_in_run_s")),
                        _ratio(share.get("in_run_ratio")))
                       for code, share in shares.items()]))
    return table


def _ratio(value):
    return "-" if value is None else f"{value:.2f}"


def _seconds(value):
    return "-" if value is None else f"{value:.1f}"


def write_shares(summary):
    """{code: WriteToAnyCost's seconds fed dicts and fed record batches, less each source's
    own seconds (source-dicts, source-batches), and their ratio}, for this code ("this") and
    any baseline ("@main")."""
    sources = {kind: summary.get(f"source-{kind}") for kind in ("dicts", "batches")}
    if not all(sources.values()):
        return {}
    shares = {}
    for name in summary:
        if not name.startswith("write-dicts"):
            continue
        suffix = name[len("write-dicts"):]
        batches = summary.get("write-batches" + suffix)
        if not batches:
            continue
        dicts_s = summary[name]["wall_s"] - sources["dicts"]["wall_s"]
        batches_s = batches["wall_s"] - sources["batches"]["wall_s"]
        share = {"dicts_s": round(dicts_s, 2), "batches_s": round(batches_s, 2),
                 "ratio": round(dicts_s / batches_s, 2) if batches_s > 0 else None}
        in_run = [entry.get("wall_less_source_s") for entry in (summary[name], batches)]
        if None not in in_run:  # the same subtraction, with the source's time from the same run
            share.update({"dicts_in_run_s": in_run[0], "batches_in_run_s": in_run[1],
                          "in_run_ratio": round(in_run[0] / in_run[1], 2) if in_run[1] > 0 else None})
        shares[suffix or "this"] = share
    return shares


def summarise_runs(results):
    """{contender: median wall over repeats, max RSS, ...} in CONTENDERS order."""
    summary = {}
    names = [r["contender"] for r in results]
    ordered = []
    for name in CONTENDERS + OPTIONAL_CONTENDERS:  # each contender, then its baselines
        ordered += [name] + sorted({n for n in names if n.startswith(name + "@")})
    for name in ordered:
        runs = [r for r in results if r["contender"] == name]
        if not runs:
            continue
        wall = statistics.median(r["wall_s"] for r in runs)
        summary[name] = {
            "wall_s": round(wall, 3), "rows_per_s": round(runs[0]["rows"] / wall),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 2),
            "bodies": runs[0]["emulator"]["bodies"], "runs": len(runs),
            "verified": all(r["verified"] for r in runs),
        }
        in_run = [r["wall_s"] - r["child_says"]["source_s"] for r in runs
                  if isinstance((r.get("child_says") or {}).get("source_s"), (int, float))]
        if len(in_run) == len(runs):  # write-* and source-*: wall less the source's own timed work
            summary[name]["wall_less_source_s"] = round(statistics.median(in_run), 3)
    return summary


# --------------------------------------------------------------------------------------------
# Modes
# --------------------------------------------------------------------------------------------

def environment():
    import pyarrow
    try:
        import apache_beam
        beam_version = apache_beam.__version__
    except ImportError:  # pragma: no cover
        beam_version = None
    return {"python": platform.python_version(), "pyarrow": pyarrow.__version__, "apache_beam": beam_version,
            "cpus": os.cpu_count(), "machine": platform.machine(),
            "mem_total_gb": _mem_total_gb(), "git": _git_state()}


def _git_state():
    """The commit, and a fingerprint of uncommitted changes to the code under test."""
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    import hashlib
    diff = git("diff", "HEAD", "--", *PACKAGES_UNDER_TEST)
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_pipeline_changes": hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else None}


def snapshot_code(target):
    """Copy the code under test (`pipeline/`, `transforms/`) to `target`; returns its fingerprint.
    Others may change the working tree while a benchmark runs; the children run this copy, and
    the profile's line numbers refer to it."""
    for package in PACKAGES_UNDER_TEST:
        source = os.path.join(ROOT, package)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(target, package), dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return code_fingerprint(target)


def code_fingerprint(root=ROOT):
    """sha256 (12 hex digits) over the .py files of the packages under test (subfolders too) under `root`."""
    import hashlib
    digest = hashlib.sha256()
    for package in PACKAGES_UNDER_TEST:
        for folder, subfolders, names in sorted(os.walk(os.path.join(root, package))):
            subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
            for name in sorted(names):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    with open(path, "rb") as handle:
                        digest.update(os.path.relpath(path, root).encode() + b"\0" + handle.read() + b"\0")
    return digest.hexdigest()[:12]


def _mem_total_gb():
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def export_baseline(ref, work_root):
    """The connector's code as committed at `ref` (`git archive`), for a before/after table."""
    target = os.path.join(work_root, f"baseline-{ref.replace('/', '_')}")
    os.makedirs(target, exist_ok=True)
    archive = subprocess.run(["git", "archive", ref, *PACKAGES_UNDER_TEST], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", target], input=archive, check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    log(f"baseline {ref} is commit {commit}")
    return target, commit


def mode_compare(args, key, work_root):
    data, expected = ensure_data(args.rows, args.seed, args.data)
    contenders = args.only or list(CONTENDERS)
    code_dirs = {}
    if args.baseline:  # each of the connector's own contenders also on the baseline's code, just after it
        baseline_code, baseline_commit = export_baseline(args.baseline, work_root)
        with_baselines = []
        for name in contenders:
            with_baselines.append(name)
            if name in BASELINE_CONTENDERS:
                with_baselines.append(f"{name}@{args.baseline}")
                code_dirs[with_baselines[-1]] = baseline_code
        contenders = with_baselines
    log(f"\n== side by side: {expected['rows']:,} rows, {expected['connections']} connections x "
        f"{len(expected['months'])} months, ≈{expected['json_bytes_per_row']} bytes of JSON per row ==")
    results = []
    with EmulatorProcess(key, os.path.join(work_root, "emulator.log"),
                         parse_processes=args.emulator_processes) as emulator:
        log(f"emulator (throughput mode, up to {args.emulator_processes} bodies parsed at once) on {emulator.url}")
        for round_index in range(args.repeat):
            for name in contenders:
                result = run_contender(name, data, expected, emulator, key,
                                       os.path.join(work_root, f"round-{round_index + 1}"), args.timeout,
                                       code_dir=code_dirs.get(name))
                results.append(result)
                log(describe(result))
    summary = summarise_runs(results)
    log(f"\n{expected['rows']:,} rows, {os.cpu_count()} CPUs"
        + (f", median of {args.repeat} rounds" if args.repeat > 1 else "") + ":")
    log(compare_table(summary))
    return {"mode": "compare", "rows": expected["rows"], "seed": args.seed, "data": rel(data),
            "baseline": {"ref": args.baseline, "commit": baseline_commit} if args.baseline else None,
            "json_bytes_per_row": expected["json_bytes_per_row"], "summary": summary, "runs": results}


def mode_scaling(args, key, work_root):
    contenders = args.only or ["pipeline-parquet"]
    sizes = args.scaling_rows
    log(f"\n== scaling: {', '.join(contenders)} at {', '.join(f'{n:,}' for n in sizes)} rows, "
        f"{SCALING_ROWS_PER_STREAM_MONTH:,} rows a stream-month ==")
    results = []
    with EmulatorProcess(key, os.path.join(work_root, "emulator.log"),
                         parse_processes=args.emulator_processes) as emulator:
        for rows in sizes:
            data, expected = ensure_data(rows, args.seed, args.data, scaling_connections(rows),
                                         csv_copy="pipeline-csv" in contenders)
            for name in contenders:
                result = run_contender(name, data, expected, emulator, key,
                                       os.path.join(work_root, f"rows-{rows}"), args.timeout)
                results.append(result)
                log(describe(result))
    table, fits = [], {}
    for name in contenders:
        runs = [r for r in results if r["contender"] == name]
        for r in runs:
            table.append((name, f"{r['rows']:,}", f"{scaling_connections(r['rows'])} x 2",
                          f"{r['wall_s']:.1f}", f"{r['rows_per_s']:,}",
                          f"{1e6 * r['wall_s'] / r['rows']:.1f}", f"{r['peak_rss_mb']:,.0f}",
                          "OK" if r["verified"] else "MISMATCH"))
        if len(runs) >= 2:
            fits[name] = _linear_fit([r["rows"] for r in runs], [r["wall_s"] for r in runs])
    log("\n" + render_table(("contender", "rows", "streams x months", "wall s", "rows/s", "µs/row", "peak RSS MB", "check"), table))
    for name, fit in fits.items():
        log(f"{name}: wall ≈ {fit['fixed_s']:.1f} s + {fit['us_per_row']:.1f} µs × rows  (r² {fit['r2']:.4f})")
    return {"mode": "scaling", "seed": args.seed, "runs": results, "fits": fits}


def _linear_fit(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys) or 1e-12
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    return {"fixed_s": round(intercept, 3), "us_per_row": round(slope * 1e6, 3), "r2": round(1 - ss_res / ss_tot, 5)}


def _dry_run_bodies(data, work, max_body_bytes, timeout):
    """Bodies per connection of a --dry_run of the pipeline with this body size."""
    out = os.path.join(work, f"bodies-{max_body_bytes}")
    shutil.rmtree(out, ignore_errors=True)
    command = [PYTHON, "-m", "pipeline", "--input", os.path.join(data, "parquet", "*.parquet"),
               "--stream_column", STREAM_COLUMN, "--dry_run", "--output_dir", out,
               "--max_body_bytes", str(max_body_bytes), "--report_path", os.path.join(out + ".report.json"),
               "--dead_letter_path", os.path.join(work, "rejected", "rows"), "--runner=DirectRunner"]
    result = run_child(command, dict(os.environ), out + ".log", timeout)
    if result["exit_code"] != 0:
        raise RuntimeError(f"the dry run failed; see {result['log']}")
    with open(out + ".report.json") as handle:
        report = json.load(handle)
    per_connection = {conn: sum(m["bodies"] for m in months.values()) for conn, months in report["streams"].items()}
    row_bytes = {conn: sum(m["bytes"] for m in months.values()) for conn, months in report["streams"].items()}
    return out, per_connection, row_bytes


def mode_streams(args, key, work_root):
    """8 connections x 4 bodies with 200 ms per request: the pipeline against a serial poster."""
    connections, bodies, latency = STREAMS_CONNECTIONS, STREAMS_BODIES, args.latency
    rows = connections * STREAMS_ROWS_PER_CONNECTION
    data = os.path.join(args.data, f"streams-{connections}x1-rows-{rows}-seed-{args.seed}")
    expected = generate.ensure(data, rows=rows, seed=args.seed, connections=connections, months=("2024-08",),
                               files=2, csv_copy=False, log=log)
    work = os.path.join(work_root, "streams")
    os.makedirs(work, exist_ok=True)
    log(f"\n== streams: {connections} connections x {bodies} bodies, {latency * 1000:.0f} ms per request ==")
    # Find a body size that gives every connection exactly `bodies` bodies, with the pipeline's own packing.
    _, _, row_bytes = _dry_run_bodies(data, work, 5_000_000, args.timeout)
    size = math.ceil(max(row_bytes.values()) / (bodies - 0.5))
    for _ in range(8):
        bodies_dir, per_connection, _ = _dry_run_bodies(data, work, size, args.timeout)
        counts = set(per_connection.values())
        if counts == {bodies}:
            break
        size = int(size * (1.04 if max(counts) > bodies else 0.96))
    else:
        raise RuntimeError(f"could not find a body size giving {bodies} bodies per connection: {per_connection}")
    total_bodies = sum(per_connection.values())
    log(f"--max_body_bytes {size}: {total_bodies} bodies ({bodies} per connection), written to "
        f"{rel(bodies_dir)}")
    env = dict(os.environ, CLOUDZERO_API_KEY=key, PYTHONUNBUFFERED="1")
    record = {"mode": "streams", "connections": connections, "bodies_per_connection": bodies,
              "latency_s": latency, "max_body_bytes": size, "bodies": total_bodies, "rows": rows}
    with InProcessEmulator(key, latency) as emulator:
        emulator.reset()
        command = contender_command("pipeline-parquet", data, emulator.url, os.path.join(work, "pipeline"), size)
        os.makedirs(os.path.join(work, "pipeline"), exist_ok=True)
        pipeline = run_child(command, env, os.path.join(work, "pipeline", "output.log"), args.timeout)
        pipeline["window_s"], pipeline["posts"] = emulator.create_window()
        stats = emulator.stats()
        pipeline["concurrency_violations"] = stats["concurrency_violations"]
        pipeline["problems"] = verify(stats, expected) + ([f"exit code {pipeline['exit_code']}"]
                                                          if pipeline["exit_code"] else [])
        emulator.reset()
        serial = run_child([PYTHON, "-m", "benchmarks.serial_post", "--bodies", bodies_dir, "--api_url", emulator.url],
                           env, os.path.join(work, "serial.log"), args.timeout)
        serial["window_s"], serial["posts"] = emulator.create_window()
        stats = emulator.stats()
        serial["concurrency_violations"] = stats["concurrency_violations"]
        serial["problems"] = verify(stats, expected) + ([f"exit code {serial['exit_code']}"]
                                                        if serial["exit_code"] else [])
    record["pipeline"], record["serial"] = pipeline, serial
    record["ratio_wall"] = round(pipeline["wall_s"] / serial["wall_s"], 3)
    record["ratio_window"] = round(pipeline["window_s"] / serial["window_s"], 3) if serial["window_s"] else None
    rows_out = []
    for name, entry in (("pipeline (parquet)", pipeline), ("serial poster", serial)):
        rows_out.append((name, f"{entry['wall_s']:.2f}", f"{entry['window_s']:.2f}", entry["posts"],
                         entry["concurrency_violations"], "OK" if not entry["problems"] else "MISMATCH"))
    log(render_table(("contender", "wall s", "POST window s", "POSTs", "concurrency violations", "check"), rows_out))
    log(f"ratio pipeline / serial: wall {record['ratio_wall']:.2f}, POST window {record['ratio_window']:.2f} "
        f"(target ≤ 0.40); concurrency violations: {pipeline['concurrency_violations']}")
    for name, entry in (("pipeline", pipeline), ("serial", serial)):
        for problem in entry["problems"]:
            log(f"  MISMATCH ({name}): {problem}")
    record["verified"] = not pipeline["problems"] and not serial["problems"]
    return record


def mode_profile(args, key, work_root):
    """The pipeline on Parquet under `py-spy record` (collapsed stacks), then its hotspots."""
    from benchmarks import profile_summary  # pylint: disable=import-outside-toplevel
    py_spy = shutil.which("py-spy", path=os.path.dirname(PYTHON) + os.pathsep + os.environ.get("PATH", ""))
    if not py_spy:
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    data, expected = ensure_data(args.rows, args.seed, args.data)
    profile = os.path.join(work_root, "profile-pipeline-parquet.speedscope.json")
    wrap = [py_spy, "record", "--rate", str(PROFILE_RATE), "--format", "speedscope", "--threads",
            "--output", profile, "--"]
    log(f"\n== profile: pipeline on Parquet, {expected['rows']:,} rows, under py-spy ==")
    with EmulatorProcess(key, os.path.join(work_root, "emulator.log"),
                         parse_processes=args.emulator_processes) as emulator:
        result = run_contender("pipeline-parquet", data, expected, emulator, key,
                               os.path.join(work_root, "profile"), args.timeout, wrap=wrap)
    log(describe(result) + "\n      (wall time under py-spy; the RSS figures are py-spy's own, not the pipeline's)")
    summary = profile_summary.summarise(profile, top=20, rate=PROFILE_RATE)
    log(profile_summary.render(summary, top=20))
    log(f"profile: {rel(profile)} (open it in https://www.speedscope.app; line numbers refer to "
        f"{rel(os.path.join(work_root, 'code-under-test'))}/)")
    return {"mode": "profile", "run": result, "profile": rel(profile), "hotspots": summary}


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def _contender_list(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONTENDERS + OPTIONAL_CONTENDERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown contender(s) {unknown}; known: {', '.join(CONTENDERS + OPTIONAL_CONTENDERS)}")
    return names


def _rows_list(text):
    return [int(n.replace("_", "")) for n in text.split(",") if n.strip()]


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=generate.DEFAULT_ROWS)
    parser.add_argument("--seed", type=int, default=generate.DEFAULT_SEED)
    parser.add_argument("--only", type=_contender_list, default=None,
                        help=f"comma-separated subset of: {', '.join(CONTENDERS + OPTIONAL_CONTENDERS)}")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the side-by-side run (median shown)")
    parser.add_argument("--scaling", action="store_true", help="the pipeline at --scaling_rows")
    parser.add_argument("--scaling_rows", type=_rows_list, default=list(SCALING_ROWS))
    parser.add_argument("--streams", action="store_true", help="8 connections x 4 bodies at --latency per request")
    parser.add_argument("--latency", type=float, default=STREAMS_LATENCY)
    parser.add_argument("--profile", action="store_true", help="the pipeline on Parquet under py-spy")
    parser.add_argument("--compare", action="store_true",
                        help="also run the side-by-side comparison when --scaling/--streams/--profile is given")
    parser.add_argument("--baseline", metavar="GIT_REF", default=None,
                        help="also run pipeline-parquet, write-dicts and write-batches on the code committed at "
                             "GIT_REF, e.g. main: a before/after table")
    parser.add_argument("--emulator_processes", type=int, default=os.cpu_count() or 1,
                        help="bodies the emulator parses at once, on as many processes (1: one at a "
                             "time, under one GIL); CloudZero serves parallel requests in parallel")
    parser.add_argument("--data", default=DATA_DIR, help="where generated data is cached")
    parser.add_argument("--results", default=RESULTS_DIR)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before a child is killed")
    parser.add_argument("--live_code", action="store_true",
                        help="run pipeline/ and transforms/ from the working tree, not a frozen copy")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    key = secrets.token_hex(16)  # a throw-away key shared by the emulator and the children
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    work_root = os.path.join(args.results, stamp)
    os.makedirs(work_root, exist_ok=True)
    record = {"started": stamp, "environment": environment(), "argv": sys.argv[1:] if argv is None else list(argv)}
    global CODE_DIR  # pylint: disable=global-statement
    frozen = os.path.join(work_root, "code-under-test")
    record["code_fingerprint"] = snapshot_code(frozen)
    if not args.live_code:
        CODE_DIR = frozen
    log(f"benchmarks: {record['environment']}; code {record['code_fingerprint']} "
        f"({'working tree' if args.live_code else 'frozen copy'}); results in {rel(work_root)}")
    special = args.scaling or args.streams or args.profile
    ok = True
    if not special or args.compare:
        record["compare"] = mode_compare(args, key, work_root)
        ok &= all(entry["verified"] for entry in record["compare"]["summary"].values())
    if args.scaling:
        record["scaling"] = mode_scaling(args, key, work_root)
        ok &= all(r["verified"] for r in record["scaling"]["runs"])
    if args.streams:
        record["streams"] = mode_streams(args, key, work_root)
        ok &= record["streams"]["verified"]
    if args.profile:
        record["profile"] = mode_profile(args, key, work_root)
        ok &= record["profile"]["run"]["verified"]
    record["ok"] = ok
    if code_fingerprint(ROOT) != record["code_fingerprint"]:
        note = ("the working tree's pipeline/ or transforms/ changed during this run"
                + ("; the children ran the frozen copy taken at the start" if not args.live_code
                   else "; with --live_code the figures may mix two versions of the code"))
        record["code_changed_during_run"] = note
        log(f"note: {note}")
    path = os.path.join(work_root, "results.json")
    with open(path, "w") as handle:
        json.dump(record, handle, indent=1, default=str)
    log(f"\nresults: {rel(path)}")
    if not ok:
        log("MISMATCH: at least one contender did not deliver exactly the expected rows and costs")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
