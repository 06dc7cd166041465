"""Summarise a py-spy profile in collapsed-stack form (`py-spy record --format raw --threads`).

    python -m benchmarks.profile_summary benchmarks/results/<run>/profile-pipeline-parquet.txt [--rate 200]

Prints:

* samples per thread;
* the main thread's time (a proxy for wall time: the in-process runner executes every stage
  there) by the innermost line of the project's own code on the stack (`pipeline/`,
  `transforms/`), so library time (Arrow kernels, joins) is charged to the line that called it;
  stacks without project code are charged to their innermost frame (Beam's runner, imports);
* the innermost Python frame over all threads (self time).

py-spy leaves out idle threads, so a sample is a moment when that thread was running or
runnable. The same file opens in https://www.speedscope.app as it is.
"""
import argparse
import collections
import re
import sys

PROJECT_DIRS = ("pipeline/", "transforms/")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_SITE = re.compile(r".*?(site-packages|lib/python3\.\d+)/")


def _short(frame, keep_line=True):
    """`func (/abs/path/to/file.py:123)` -> `func (file.py:123)`, without the venv or repo prefix."""
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = _SITE.sub("", match.group("file"))
    for marker in ("/code-under-test/", "/work/main/"):  # a frozen copy (run.py) or the repository
        root = path.find(marker)
        if root >= 0:
            path = path[root + len(marker):]
            break
    line = f":{match.group('line')}" if keep_line and match.group("line") else ""
    return f"{match.group('func')} ({path}{line})"


ENTRY_FILES = ("(pipeline/main.py", "(pipeline/__main__.py")


def _is_project(frame):
    """Project code, leaving out the CLI entry point (which sits under every runner frame)."""
    return any(f"({d}" in frame for d in PROJECT_DIRS) and not frame.split(" ", 1)[-1].startswith(ENTRY_FILES)


def read_speedscope(path, rate):
    """py-spy's speedscope JSON: [(thread name, frames outermost-first, samples)], per thread in
    time order (idle samples are not recorded, so order is busy time, not wall time)."""
    import json
    with open(path, encoding="utf-8") as handle:
        document = json.load(handle)
    shared = document["shared"]["frames"]
    names = [_short(f"{f['name']} ({f['file']}:{f['line']})" if f.get("line") else f"{f['name']} ({f['file']})")
             for f in shared]
    stacks = []
    for profile in document["profiles"]:
        match = re.match(r'Thread (\d+) "(.*)"', profile["name"])  # names repeat ("" too): keep the id
        thread = f"{match.group(2) or 'unnamed'} [{match.group(1)}]" if match else profile["name"]
        for sample, weight in zip(profile["samples"], profile["weights"]):
            frames = [names[i] for i in sample if not names[i].startswith(("thread (", "process "))]
            stacks.append((thread, frames, max(1, round(weight * rate))))
    return stacks


def read(path, rate=200):
    """[(thread name, frames outermost-first, count)] from raw (collapsed) or speedscope output."""
    with open(path, "rb") as handle:
        if handle.read(1) == b"{":
            return read_speedscope(path, rate)
    stacks = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            try:
                samples = int(count)
            except ValueError:
                continue
            frames = [f for f in stack.split(";") if f]
            thread = "?"
            if frames and frames[0].startswith("thread ("):
                thread = frames.pop(0)
                thread = re.sub(r"^thread \((\d+)\)(: )?", lambda m: "", thread) or f"tid {thread[8:-1]}"
            if frames and frames[0].startswith("process "):
                frames.pop(0)
            stacks.append((thread, [_short(f) for f in frames], samples))
    return stacks


STAGES = (  # (marker on the stack, stage name), first match wins
    ("importlib", "imports"),
    ("(anycost/inputs/files.py", "launcher: plan (reads footers/headers)"),
    ("(pipeline/graph.py", "graph construction"),
    ("(transforms/read.py", "ReadCbf: read + validate + render (DoFn)"),
    ("(transforms/write.py", "WriteToAnyCost: dict rows / record batches to chunks (DoFn)"),
    ("(transforms/plan.py", "PlanDrops: plan months from row lengths (DoFn)"),
    ("(transforms/sink.py", "WriteBillingDrops: pack bodies and send (DoFn, waits for its threads)"),
    ("write_report", "report"),
    ("fn_runner", "Beam runner between DoFns: shuffle, coders, data channels"),
)


def stage_of(frames):
    joined = ";".join(frames)
    for marker, name in STAGES:
        if marker in joined:
            return name
    return "other (startup, option parsing)"


def main_thread(stacks):
    """The thread running the program's entry point (py-spy does not always know its name)."""
    busy = collections.Counter()
    for thread, frames, count in stacks:
        if frames and ("_run_module_as_main" in frames[0] or frames[0].startswith("<module>")):
            busy[thread] += count
    return busy.most_common(1)[0][0] if busy else "MainThread"


def timeline(stacks, rate, thread="MainThread", window=0.5):
    """The main thread's busy time in order: each `window` seconds labelled with its dominant
    stage, consecutive equal labels merged: [(start s, end s, stage)]."""
    windows, clock = [], 0.0
    for name, frames, count in stacks:
        if name != thread or not frames:
            continue
        index = int(clock / window)
        while len(windows) <= index:
            windows.append(collections.Counter())
        windows[index][stage_of(frames)] += count
        clock += count / rate
    merged = []
    for index, counter in enumerate(windows):
        stage = counter.most_common(1)[0][0]
        if merged and merged[-1][2] == stage:
            merged[-1][1] = (index + 1) * window
        else:
            merged.append([index * window, (index + 1) * window, stage])
    if merged:
        merged[-1][1] = round(clock, 2)
    return [(round(a, 2), round(b, 2), stage) for a, b, stage in merged]


def summarise(path, top=15, rate=200):
    stacks = read(path, rate)
    with open(path, "rb") as handle:
        ordered = handle.read(1) == b"{"
    total = sum(count for _, _, count in stacks) or 1
    main = main_thread(stacks)
    threads, own, main_lines = collections.Counter(), collections.Counter(), collections.Counter()
    stages = collections.Counter()
    main_total = 0
    for thread, frames, count in stacks:
        threads[thread] += count
        if not frames:
            continue
        own[_short(frames[-1], keep_line=False) if _FRAME.match(frames[-1]) else frames[-1]] += count
        if thread == main:
            main_total += count
            stages[stage_of(frames)] += count
            mine = [f for f in frames if _is_project(f)]
            if any("importlib" in f for f in frames):
                key = "(imports)"
            elif mine:
                key = mine[-1]
            else:
                key = "Beam runner: " + _short(frames[-1], keep_line=False)
            main_lines[key] += count

    def rows(counter, denominator, n):
        return [(name, count, round(100.0 * count / denominator, 1), round(count / rate, 2))
                for name, count in counter.most_common(n)]

    return {"samples": total, "rate": rate, "main_thread_samples": main_total,
            "threads": rows(threads, total, 12), "main_thread": rows(main_lines, main_total or 1, top),
            "stages": rows(stages, main_total or 1, 20), "timeline": timeline(stacks, rate, main) if ordered else [],
            "self": rows(own, total, top)}


def render(summary, top=15):
    lines = [f"{summary['samples']:,} samples at {summary['rate']} Hz; by thread:"]
    for name, count, share, seconds in summary["threads"][:8]:
        lines.append(f"  {share:5.1f}%  {seconds:6.2f} s  {name}")
    lines.append("main thread by stage (the in-process runner runs every DoFn on it):")
    for name, count, share, seconds in summary["stages"]:
        lines.append(f"  {share:5.1f}%  {seconds:6.2f} s  {name}")
    if summary["timeline"]:
        lines.append("main thread, in order (busy time; each half second labelled by its main stage):")
        for start, end, stage in summary["timeline"]:
            lines.append(f"  {start:6.1f} - {end:6.1f} s  {stage}")
    lines.append(f"main thread ({summary['main_thread_samples'] / summary['rate']:.1f} s busy), by the innermost "
                 "line of pipeline/ or transforms/ (library time below it included):")
    for name, count, share, seconds in summary["main_thread"][:top]:
        lines.append(f"  {share:5.1f}%  {seconds:6.2f} s  {name}")
    lines.append("innermost Python frame, all threads (self time):")
    for name, count, share, seconds in summary["self"][:top]:
        lines.append(f"  {share:5.1f}%  {seconds:6.2f} s  {name}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_summary")
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--rate", type=int, default=200, help="the --rate py-spy sampled at")
    args = parser.parse_args(argv)
    print(render(summarise(args.path, args.top, args.rate), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
