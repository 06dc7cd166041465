"""Smoke test of the benchmark harness (not timed): small data, real children, exact totals.

Generates 2,000 rows, runs the plain-Python floor and the pipeline (Parquet) as child processes
through `benchmarks.run`, against the emulator in throughput mode, and checks that what arrived
equals expected.json exactly: rows and Decimal cost per (connection, month). No timing assertions.
"""
import json
import os
from decimal import Decimal

import pytest

from benchmarks import generate, run

ROWS = 2_000
KEY = "bench-smoke-key-0c9f"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("bench-data") / "rows-2000")
    expected = generate.generate(out, rows=ROWS, seed=3, log=lambda *_: None)
    return out, expected


@pytest.fixture
def emulator():
    with run.InProcessEmulator(KEY, latency=0.0) as emu:
        yield emu


def _arrived(emulator):
    return {conn: {month: (entry["rows"], Decimal(entry["cost"])) for month, entry in months.items()}
            for conn, months in emulator.stats()["totals"].items()}


def _wanted(expected):
    return {conn: {month: (entry["rows"], Decimal(entry["cost"])) for month, entry in months.items()}
            for conn, months in expected["streams"].items()}


def test_generated_data_is_deterministic_and_complete(data, tmp_path):
    out, expected = data
    assert expected["rows"] == ROWS
    assert sum(m["rows"] for months in expected["streams"].values() for m in months.values()) == ROWS
    assert len(expected["streams"]) == generate.DEFAULT_CONNECTIONS
    assert all(len(months) == len(generate.DEFAULT_MONTHS) for months in expected["streams"].values())
    assert sorted(os.listdir(os.path.join(out, "parquet"))) == [f"part-{i:03d}.parquet" for i in range(8)]
    assert len(os.listdir(os.path.join(out, "csv"))) == 8
    again = generate.generate(str(tmp_path / "again"), rows=ROWS, seed=3, csv_copy=False, log=lambda *_: None)
    assert again["streams"] == expected["streams"] and again["total_cost"] == expected["total_cost"]
    with open(os.path.join(out, "parquet", "part-000.parquet"), "rb") as a, \
            open(str(tmp_path / "again" / "parquet" / "part-000.parquet"), "rb") as b:
        assert a.read() == b.read()


@pytest.mark.parametrize("contender", ["floor", "pipeline-parquet", "write-dicts", "write-batches"])
def test_contender_delivers_exactly_the_expected_totals(contender, data, emulator, tmp_path):
    out, expected = data
    result = run.run_contender(contender, out, expected, emulator, KEY, str(tmp_path), timeout=120)
    with open(os.path.join(run.ROOT, result["log"]), encoding="utf-8", errors="replace") as handle:
        output = handle.read()[-3000:]
    assert result["exit_code"] == 0, output
    assert _arrived(emulator) == _wanted(expected), output
    assert result["verified"], result["problems"]
    assert result["emulator"]["concurrency_violations"] == 0
    assert result["peak_rss_mb"] > 0 and result["wall_s"] > 0


@pytest.mark.parametrize("contender", ["source-dicts", "source-batches"])
def test_a_source_alone_counts_every_row_and_sends_nothing(contender, data, emulator, tmp_path):
    out, expected = data
    result = run.run_contender(contender, out, expected, emulator, KEY, str(tmp_path), timeout=120)
    assert result["exit_code"] == 0 and result["verified"], result["problems"]
    says = result["child_says"]
    assert (says["sink"], says["rows"]) == ("count", ROWS)
    assert 0 < says["source_s"] < result["wall_s"]  # its own timed work, within the run
    assert emulator.stats()["post_count"] == 0


def test_write_shares_subtract_each_source_and_pair_each_baseline():
    entry = lambda wall: {"wall_s": wall}  # noqa: E731
    summary = {"write-dicts": entry(30.0), "write-batches": entry(12.0), "write-dicts@main": entry(40.0),
               "write-batches@main": entry(13.0), "source-dicts": entry(15.0), "source-batches": entry(2.0)}
    assert run.write_shares(summary) == {
        "this": {"dicts_s": 15.0, "batches_s": 10.0, "ratio": 1.5},
        "@main": {"dicts_s": 25.0, "batches_s": 11.0, "ratio": 2.27}}
    del summary["source-batches"]
    assert run.write_shares(summary) == {}


def test_write_shares_also_subtract_the_sources_time_in_the_same_run():
    def result(name, wall, source_s):
        return {"contender": name, "rows": 10, "wall_s": wall, "peak_rss_mb": 1, "cpu_s": 1, "verified": True,
                "emulator": {"bodies": 1}, "child_says": {"source_s": source_s}}
    runs = [result("write-dicts", 30.0, 14.0), result("write-dicts", 31.0, 17.0), result("write-dicts", 29.0, 16.0),
            result("write-batches", 12.0, 2.0), result("write-batches", 11.0, 1.5), result("write-batches", 13.0, 2.5),
            result("source-dicts", 16.0, 14.0), result("source-batches", 2.5, 2.0)]
    summary = run.summarise_runs(runs)
    assert summary["write-dicts"]["wall_less_source_s"] == 14.0  # the median of 16, 14 and 13
    assert summary["write-batches"]["wall_less_source_s"] == 10.0
    share = run.write_shares(summary)["this"]
    assert (share["dicts_in_run_s"], share["batches_in_run_s"], share["in_run_ratio"]) == (14.0, 10.0, 1.4)
    assert share["ratio"] == round((30.0 - 16.0) / (12.0 - 2.5), 2)  # the separate source runs, as before
    runs[0]["child_says"] = {}  # a run (a baseline's code, say) that did not time its source
    assert "in_run_ratio" not in run.write_shares(run.summarise_runs(runs))["this"]


def test_verify_reports_a_wrong_cost_as_a_mismatch(data):
    _, expected = data
    stats = {"totals": json.loads(json.dumps(expected["streams"])), "concurrency_violations": 0}
    assert run.verify(stats, expected) == []
    connection = sorted(stats["totals"])[0]
    month = sorted(stats["totals"][connection])[0]
    stats["totals"][connection][month]["cost"] = str(Decimal(stats["totals"][connection][month]["cost"])
                                                     + Decimal("0.00000001"))
    problems = run.verify(stats, expected)
    assert len(problems) == 1 and connection in problems[0]


def test_the_faults_benchmark_runs_exactly_once_and_a_rerun_with_the_ledger_posts_nothing(tmp_path, capsys):
    """`python -m benchmarks.faults`, small: under cached application errors, load-balancer
    errors and dropped answers, run 1 is exact and the rerun from the same folder posts nothing
    (its exit status says so)."""
    from benchmarks import faults
    code = faults.main(["--rows", "3000", "--max_body_bytes", "40000", "--runs", "2", "--kills", "2",
                        "--data", str(tmp_path)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    lines = {line.split("  ")[0]: line for line in printed.splitlines()}
    assert lines["run 1 (folder A)"].rstrip().endswith("exact")
    assert lines["rerun (folder A, same ledger)"].split()[7:9] == ["0", "0"]  # exit 0, 0 POSTs
    assert lines["two runs at once, one ledger"].rstrip().endswith("exact")
    crash = next(line for line in printed.splitlines() if line.startswith("crash loop: 2 SIGKILLs"))
    assert crash.rstrip().endswith("exact")


def test_a_baseline_is_the_committed_code_and_sits_beside_its_contender(tmp_path):
    """--baseline REF: the connector's packages as committed at REF, and each baseline run
    summarised right after the same contender on this code."""
    target, commit = run.export_baseline("HEAD", str(tmp_path))
    assert commit and os.path.isfile(os.path.join(target, "anycost", "delivery", "engine.py"))
    assert os.path.isfile(os.path.join(target, "transforms", "write.py"))
    assert not os.path.exists(os.path.join(target, "tests"))

    def result(name, wall):
        return {"contender": name, "rows": 10, "wall_s": wall, "peak_rss_mb": 1.0, "cpu_s": 1.0,
                "emulator": {"bodies": 1}, "verified": True}
    results = [result("write-batches@HEAD", 4.0), result("write-dicts", 2.0), result("write-dicts@HEAD", 3.0),
               result("pipeline-parquet@HEAD", 5.0), result("pipeline-parquet", 6.0), result("write-batches", 1.0)]
    assert list(run.summarise_runs(results)) == ["pipeline-parquet", "pipeline-parquet@HEAD", "write-dicts",
                                                 "write-dicts@HEAD", "write-batches", "write-batches@HEAD"]


def test_the_thread_benchmark_gives_the_same_chunks_both_ways(tmp_path, capsys):
    """`benchmarks.normalise_threads`, small: inline and on the pool, identical chunks."""
    from benchmarks import normalise_threads
    assert normalise_threads.main(["--rows", "2000", "--files", "2", "--repeat", "1", "--data", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "chunks identical" in printed and "one thread" in printed


def test_the_emulator_cost_benchmark_times_a_real_body(tmp_path, capsys):
    """`benchmarks.emulator_cost`, small: the floor's first body parsed and counted."""
    from benchmarks import emulator_cost
    assert emulator_cost.main(["--rows", "2000", "--repeat", "1", "--data", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert all(f"emulator {step}" in printed for step in ("decode_json", "throughput_batch", "count_body"))
    assert " 0 rows" not in printed


def test_the_emulators_cpu_includes_its_parse_processes(tmp_path):
    with run.EmulatorProcess(KEY, str(tmp_path / "one.log")) as alone:
        assert run._children(alone.process.pid) == []
    with run.EmulatorProcess(KEY, str(tmp_path / "two.log"), parse_processes=2) as pooled:
        workers = run._children(pooled.process.pid)
        assert len(workers) >= 1  # the spawned worker (and multiprocessing's resource tracker)
        own = run._cpu_ticks(pooled.process.pid) / os.sysconf("SC_CLK_TCK")
        worker_cpu = sum(run._cpu_ticks(pid) or 0 for pid in workers) / os.sysconf("SC_CLK_TCK")
        assert worker_cpu > 0  # a spawned interpreter has imported the emulator
        assert pooled.cpu_seconds() >= own + worker_cpu - 0.05


def test_the_timeline_splits_a_real_run_into_phases_in_order(tmp_path, capsys):
    """`benchmarks.timeline`, small: every phase of a real command-line run, none negative
    (the marks come in the order the phases claim), the sink's stage found after the reads."""
    from benchmarks import timeline
    assert timeline.main(["--rows", "2000", "--repeat", "1", "--data", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    (measured,) = json.loads(printed.strip().splitlines()[-1])["runs"]
    assert all(measured[name] >= 0 for name in timeline.PHASES), measured
    assert measured["stages between"] >= 1 and 0 < measured["first POST at"] < measured["wall"]
    assert 0 < measured["read cpu %"] <= 100 * os.cpu_count() + 10
