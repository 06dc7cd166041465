"""--watch: the command line as a streaming job over files that arrive while it runs."""
import os
import shlex
import subprocess
import threading
import time
from decimal import Decimal

import pytest

from tests.support import run_cli, write_csv

HEADER = ["time/usage_start", "cost/cost", "resource/service"]
ROWS_A = [["2024-09-01T05:00:00Z", "1.25", "api"], ["2024-09-02T05:00:00Z", "2", "db"]]
ROWS_B = [["2024-09-03T05:00:00Z", "10", "api"]]



def place(folder, name, rows):
    """Written elsewhere, then renamed into place: the watcher only ever sees whole files."""
    hidden = write_csv(str(folder / f".{name}.tmp"), HEADER, rows)
    os.replace(hidden, folder / name)


def watch_args(emulator, tmp_path, timeout, *extra):
    return ["--input", str(tmp_path / "inbox" / "*.csv"), "--input", str(tmp_path / "later" / "*.parquet"),
            "--connection_id", "c1", "--api_url", emulator.url, "--watch", "--poll_interval", "0.2",
            "--watch_timeout", str(timeout), "--state_path", str(tmp_path / "state"),
            f"--report_path={tmp_path / 'report.json'}", f"--dead_letter_path={tmp_path / 'rejected'}", *extra]


def after_posts(emulator, count, action, deadline=30.0):
    """Run `action` once the emulator has seen `count` POSTs (so the watcher is up and polling)."""
    def wait_then_act():
        give_up = time.monotonic() + deadline
        while emulator.stats()["post_count"] < count and time.monotonic() < give_up:
            time.sleep(0.05)
        action()
    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


def test_files_written_while_watching_are_each_delivered_once_and_a_restart_posts_nothing(
        emulator, tmp_path, capsys):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    place(inbox, "a.csv", ROWS_A)  # there before the watcher starts
    writers = [after_posts(emulator, 1, lambda: place(inbox, "b.csv", ROWS_B)),
               after_posts(emulator, 2, lambda: place(inbox, "c.csv", ROWS_B))]  # same rows: a second delivery
    code, report, printed = run_cli(watch_args(emulator, tmp_path, 6), capsys)
    for writer in writers:
        writer.join()
    assert code == 0, printed
    assert sorted(os.path.basename(path) for path in report["files_found"]) == ["a.csv", "b.csv", "c.csv"]
    month = emulator.totals()["c1"]["2024-09"]
    assert (month["rows"], month["cost"]) == (4, Decimal("23.25"))
    assert emulator.stats()["post_count"] == 3  # one body per file, each once
    assert emulator.stats()["concurrency_violations"] == 0
    assert "result: OK" in printed and "files found: 3" in printed

    code, report, printed = run_cli(watch_args(emulator, tmp_path, 1.5), capsys)
    assert code == 0, printed
    assert emulator.stats()["post_count"] == 3  # the restarted watcher posted nothing
    assert report["bodies_already_delivered"] == 3 and report["bodies_sent"] == 0


def test_a_file_over_the_reject_limit_is_held_back_whole_and_the_others_go_on(emulator, tmp_path, capsys):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    place(inbox, "good.csv", ROWS_B)
    place(inbox, "bad.csv", ROWS_A + [["2024-09-04T05:00:00Z", "lots", "api"]])
    code, report, printed = run_cli(watch_args(emulator, tmp_path, 1.5), capsys)
    assert code == 1
    month = emulator.totals()["c1"]["2024-09"]
    assert (month["rows"], month["cost"]) == (1, Decimal("10"))  # good.csv only
    (held,) = report["files_held"]
    assert held.endswith("bad.csv") and "1 row was rejected" in report["files_held"][held]
    assert report["rows_rejected"] == 1 and report["blocked"] is None
    assert "bad.csv" in printed and "result: FAILED" in printed
    (dead_letter,) = report["dead_letter_files"]
    assert "lots" in open(dead_letter).read()


def test_watched_files_are_read_with_the_input_switches(emulator, tmp_path, capsys):
    """A watched file goes through the same input rules as a batch run: here a `;` delimiter,
    a column map and an extra column dropped."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (tmp_path / "map.json").write_text('{"usage_date": "time/usage_start", "amount": "cost/cost"}')
    (inbox / ".a.tmp").write_text("usage_date;amount;notes\n2024-09-01;1.10;first\n2024-09-02;2.20;second\n")
    os.replace(inbox / ".a.tmp", inbox / "a.csv")
    code, report, printed = run_cli(watch_args(emulator, tmp_path, 1.5, "--csv_delimiter", ";", "--column_map",
                                               str(tmp_path / "map.json"), "--unknown_columns", "drop"), capsys)
    assert code == 0, printed
    month = emulator.totals()["c1"]["2024-09"]
    assert (month["rows"], month["cost"]) == (2, Decimal("3.30"))
    stored = emulator.rows("c1", "2024-09")
    assert [row["time/usage_start"] for row in stored] == ["2024-09-01T00:00:00Z", "2024-09-02T00:00:00Z"]
    assert not any("notes" in row for row in stored)


def test_watch_flags_go_together(capsys):
    code, _, printed = run_cli(["--input", "x.csv", "--connection_id", "c1", "--watch_timeout", "5"], capsys)
    assert code == 2 and "go with --watch" in printed


@pytest.mark.parametrize("args,streaming", [
    (["--watch", "--poll_interval", "30"], True), (["--watch=true"], True), (["--watch", "false"], False),
    (["--operation", "sum"], False)])
def test_run_dataflow_sh_launches_a_streaming_job_for_watch(tmp_path, args, streaming):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PROJECT": "p",
           "REGION": "europe-west1", "TEMP_LOCATION": "gs://b/tmp", "INPUT": "gs://b/cbf/*.csv",
           "CONNECTION_ID": "c1", "API_KEY_SECRET": "projects/p/secrets/s/versions/1"}
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "run_dataflow.sh")
    done = subprocess.run(["bash", script, "--print", *args], env=env, capture_output=True, text=True, timeout=60)
    argv = shlex.split(done.stdout)
    assert done.returncode == 0, done.stderr
    assert ("--streaming" in argv) == streaming
    assert argv[-len(args):] == args  # the pipeline's own flags stay as given, at the end


def test_watch_refuses_a_sum_month_that_would_pass_what_cloudzero_holds(emulator, tmp_path, capsys):
    """CloudZero holds 990,000 rows of 2024-09; a watched file adds 70,000 more to it (and a
    few to 2024-10). Nothing of 2024-09 is posted, the message names the month and the limit,
    and 2024-10 is delivered."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    emulator.preload("c1", "2024-09", rows=990_000, cost="0")
    rows = [[f"2024-09-{1 + i % 28:02d}T{i % 24:02d}:00:00Z", "1", f"s{i}"] for i in range(70_000)]
    rows += [["2024-10-01T05:00:00Z", "3", "api"], ["2024-10-02T05:00:00Z", "4", "db"]]
    place(inbox, "big.csv", rows)
    code, report, printed = run_cli(watch_args(emulator, tmp_path, 4), capsys)
    assert code == 1, printed
    totals = emulator.totals()["c1"]
    assert totals["2024-09"]["rows"] == 990_000  # not one row of the month was posted
    assert (totals["2024-10"]["rows"], totals["2024-10"]["cost"]) == (2, Decimal("7"))
    said = printed + str(report)
    assert "CloudZero already holds 990,000 rows for 2024-09" in said and "1,000,000" in said


def test_watch_sends_nothing_for_a_connection_whose_lease_another_run_holds(emulator, tmp_path, capsys):
    import socket
    from anycost.delivery.lease import ConnectionLease, Holder
    from anycost.delivery.ledger import RunState
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    place(inbox, "a.csv", ROWS_A)
    other = ConnectionLease(RunState(str(tmp_path / "state")).lease_store("c1"), "c1", seconds=600,
                            holder=Holder(socket.gethostname(), os.getpid(), "2026-12-07T03:00:00Z", "run-other"))
    other.acquire(0)
    code, report, printed = run_cli(watch_args(emulator, tmp_path, 2, "--lease_wait_seconds", "0"), capsys)
    assert code == 1, printed
    assert emulator.stats()["post_count"] == 0
    assert f"process {os.getpid()} on host {socket.gethostname()}, started 2026-12-07T03:00:00Z" in printed


@pytest.mark.parametrize("runner_name, spreads", [("FnApiRunner", False), ("BundleBasedDirectRunner", True)])
def test_reads_spread_over_workers_except_on_the_in_process_runner(tmp_path, runner_name, spreads):
    """Off the FnApiRunner (here another runner object, as Dataflow is) a Reshuffle spreads the files' reads over workers; on it (whose
    streaming GroupByKey waits for the end of the watch) the reads only run side by side."""
    import apache_beam as beam
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from anycost.config import RunConfig
    from transforms.watch import _WatchAndSend
    runner = FnApiRunner() if runner_name == "FnApiRunner" else BundleBasedDirectRunner()
    p = beam.Pipeline(runner=runner)
    config = RunConfig(inputs=(str(tmp_path / "*.csv"),), connection_id="c1", watch=True, watch_timeout=1,
                       poll_interval=1)
    p | _WatchAndSend(config, str(tmp_path / "dead"), str(tmp_path / "results"), start=0)
    labels = {t.full_label.split("/")[-1] for t in p.transforms_stack[0].parts[0].parts}
    assert {"DiscoverFiles", "ReadFiles", "NumberFiles", "SendFiles"} <= labels
    assert ("SpreadFiles" in labels) is spreads


def test_watch_keeps_a_files_rows_in_chunk_files_and_leaves_none_behind(emulator, tmp_path, capsys):
    """The rows of read files go to chunk files under --temp_location, not into the
    numbering step's state; every one is gone when the watch ends."""
    inbox, temp = tmp_path / "inbox", tmp_path / "temp"  # temp is made by the chunk files alone
    inbox.mkdir()
    place(inbox, "a.csv", ROWS_A)
    place(inbox, "b.csv", ROWS_B)
    code, report, printed = run_cli(watch_args(emulator, tmp_path, 2, f"--temp_location={temp}"), capsys)
    assert code == 0, printed
    month = emulator.totals()["c1"]["2024-09"]
    assert (month["rows"], month["cost"]) == (3, Decimal("13.25"))
    assert temp.is_dir() and list(temp.iterdir()) == []  # the chunk folder was made there, then removed


def _read_and_number(tmp_path, config, path):
    """What _ReadFiles and _NumberFiles give _SendFiles for one file: (connection, _FileUnit)."""
    from anycost.bodies import file_units
    from transforms.watch import _FileFound, _FileUnit, _ReadFiles
    stat = os.stat(path)
    reader = _ReadFiles(config.normalise_settings(), 0, str(tmp_path / "dead"), str(tmp_path / "results"),
                        str(tmp_path / "chunks"))
    read = reader._read(_FileFound(0, file_units.FileIdentity(str(path), stat.st_size, stat.st_mtime)))
    return read, _FileUnit(0, read.identity, read.parts["c1"], read.held)


def test_a_read_file_passes_on_references_not_rows(tmp_path):
    import pickle
    from anycost.config import RunConfig
    from anycost.inputs.chunk_files import ChunkRef
    config = RunConfig(inputs=(str(tmp_path / "*.csv"),), connection_id="c1", watch=True)
    for rows in (1_000, 50_000):
        path = write_csv(str(tmp_path / f"f{rows}.csv"), HEADER,
                         [[f"2024-09-{1 + i % 28:02d}T{i % 24:02d}:00:00Z", "1.5", f"service-{i}" * 20]
                          for i in range(rows)])
        read, unit = _read_and_number(tmp_path, config, path)
        assert all(isinstance(ref, ChunkRef) for refs in unit.months.values() for ref in refs)
        assert len(unit.chunk_paths) == 1 and os.path.getsize(unit.chunk_paths[0]) > 0
        json_bytes = sum(ref.rows_size or ref.length for refs in unit.months.values() for ref in refs)
        # A few bytes a row (its length, kept for planning) instead of its ~150 bytes of JSON.
        assert len(pickle.dumps(read)) < json_bytes / 20, (len(pickle.dumps(read)), json_bytes)


def test_a_replayed_file_unit_whose_chunk_file_is_gone_gives_its_recorded_results_and_posts_nothing(
        emulator, tmp_path):
    """A runner may run a bundle of _SendFiles again after it deleted the unit's chunk file:
    the unit's record is there, so its results come from it and nothing is sent twice."""
    from anycost.config import RunConfig
    from transforms.watch import _SendFiles
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    place(inbox, "a.csv", ROWS_A)
    config = RunConfig(inputs=(str(inbox / "*.csv"),), connection_id="c1", watch=True, api_url=emulator.url,
                       state_path=str(tmp_path / "state"))
    _, unit = _read_and_number(tmp_path, config, inbox / "a.csv")
    sender = _SendFiles(config, str(tmp_path / "results"))
    sender.setup()
    try:
        first = list(sender._send_unit("c1", unit))
        assert [r.status for r in first] == ["delivered"] and emulator.stats()["post_count"] == 1
        assert not any(os.path.exists(path) for path in unit.chunk_paths)  # deleted once recorded
        again = list(sender._send_unit("c1", unit))
    finally:
        sender.teardown()
    assert again == first
    assert emulator.stats()["post_count"] == 1
    assert emulator.totals()["c1"]["2024-09"]["rows"] == 2


def test_the_files_of_a_bundle_are_read_at_the_same_time(tmp_path, monkeypatch):
    """Two reads that each wait for the other can only both finish if they run at once."""
    import threading
    from anycost.bodies import file_units
    from anycost.config import RunConfig
    from transforms.watch import _FileFound, _ReadFiles
    both = threading.Barrier(2, timeout=10)
    real_read = file_units.read_file

    def read_when_both_are_reading(*args, **kwargs):
        both.wait()
        return real_read(*args, **kwargs)
    monkeypatch.setattr(file_units, "read_file", read_when_both_are_reading)
    config = RunConfig(inputs=(str(tmp_path / "*.csv"),), connection_id="c1", watch=True)
    reader = _ReadFiles(config.normalise_settings(), 0, str(tmp_path / "dead"), str(tmp_path / "results"),
                        str(tmp_path / "chunks"), threads=2)
    found = []
    for number, (name, rows) in enumerate((("a.csv", ROWS_A), ("b.csv", ROWS_B))):
        path = write_csv(str(tmp_path / name), HEADER, rows)
        stat = os.stat(path)
        found.append(_FileFound(number, file_units.FileIdentity(path, stat.st_size, stat.st_mtime)))
    reader.setup()
    try:
        reader.start_bundle()
        from apache_beam.transforms.window import GlobalWindow
        out = [o for f in found for o in reader.process(f, timestamp=0, window=GlobalWindow())]
        out += list(reader.finish_bundle())
    finally:
        reader.teardown()
    reads = [o.value[1] for o in out]
    assert [r.number for r in reads] == [0, 1]  # back in the order found
    assert [sum(ref.row_count for refs in r.parts["c1"].values() for ref in refs) for r in reads] == [2, 1]
