"""Progress lines: throttled by time (an injected clock), counting what was read and sent."""
import threading
from types import SimpleNamespace

from anycost.outcomes import progress
from tests.support import run_cli, write_csv


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_reading_says_a_line_only_every_few_seconds_and_always_at_a_file_end():
    clock, lines = Clock(), []
    reading = progress.ReadProgress({"a.csv": 1, "b.parquet": 2}, lines.append, clock, every=5)
    for _ in range(10):  # ten batches within 4.5 s: no line yet
        clock.now += 0.45
        reading.rows(1000)
    assert lines == []
    clock.now += 0.5  # 5 s since the start
    reading.rows(1000)
    assert lines == ["reading: 11,000 rows, 0 of 2 files done, 2,200 rows/s"]
    reading.rows(1000)  # right after a line: throttled again
    assert len(lines) == 1
    reading.part_done("a.csv", 12000, 3)
    assert lines[-1] == "read a.csv: 12,000 rows (3 rejected); 12,000 rows, 1 of 2 files done, 2,400 rows/s"


def test_a_file_read_in_parts_is_done_when_its_last_part_is():
    clock, lines = Clock(), []
    reading = progress.ReadProgress({"big.parquet": 3}, lines.append, clock)
    clock.now += 2
    reading.rows(400)
    reading.part_done("big.parquet", 400, 0)
    reading.part_done("big.parquet", 0, 0)
    assert reading.files_done == 0
    assert lines[0] == "read big.parquet (part 1 of 3): 400 rows; 400 rows, 0 of 1 files done, 200 rows/s"
    reading.part_done("big.parquet", 0, 0)
    assert reading.files_done == 1
    assert lines[-1].startswith("read big.parquet (part 3 of 3): 0 rows; 400 rows, 1 of 1 files done")


def body(size):
    return SimpleNamespace(byte_count=size)


def test_sending_estimates_the_time_left_from_the_bytes_done():
    clock, lines = Clock(), []
    sending = progress.SendProgress(lines.append, clock, every=5)
    sending.expect(3, 3_000_000)
    sending.expect(1, 1_000_000)  # a second connection arrives
    bodies = sending.track(iter([body(1_000_000)] * 4))
    next(bodies)
    clock.now += 6
    next(bodies)  # the first body is done after 6 s: a quarter of the bytes
    assert lines == ["sending: 1 of 4 bodies done, 1.0 MB of 4.0 MB, about 18 s left"]
    clock.now += 1
    next(bodies)  # throttled
    assert len(lines) == 1
    clock.now += 100
    next(bodies)
    assert lines[-1] == "sending: 3 of 4 bodies done, 3.0 MB of 4.0 MB, about 36 s left"  # 107 s for 3 MB
    assert list(bodies) == []  # the last body is done: a closing line, whatever the throttle
    assert lines[-1] == "sending: 4 of 4 bodies done, 4.0 MB of 4.0 MB, in 1 min 47 s"


def test_sending_counts_from_several_threads_without_losing_any():
    sending = progress.SendProgress(lambda line: None, Clock(), every=5)
    sending.expect(4000, 4000)

    def send():
        for _ in sending.track(body(1) for _ in range(1000)):
            pass

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (sending.bodies_done, sending.bytes_done) == (4000, 4000)


def test_amounts_and_durations_read_naturally():
    assert [progress.amount(n) for n in (0, 999, 48_200, 367_000_000, 1_200_000_000)] == [
        "0 bytes", "999 bytes", "48.2 kB", "367.0 MB", "1.20 GB"]
    assert [progress.duration(s) for s in (0.4, 59, 125, 4320)] == ["0 s", "59 s", "2 min 05 s", "1 h 12 min"]


def test_a_run_shows_what_it_read_and_sent(emulator, tmp_path, capsys):
    rows = [[f"2024-0{8 + i % 2}-01T00:00:00Z", f"{i}.5"] for i in range(6)]
    paths = [write_csv(str(tmp_path / f"in{n}.csv"), ["time/usage_start", "cost/cost"], rows) for n in range(2)]
    code, report, printed = run_cli(["--input", str(tmp_path / "in*.csv"), "--connection_id", "c1",
                                     f"--api_url={emulator.url}", f"--report_path={tmp_path}/r.json"], capsys)
    assert code == 0, printed
    read_lines = [line.split("cloudzero: ", 1)[1] for line in printed.splitlines() if "cloudzero: read " in line]
    assert [line.split(";")[0] for line in read_lines] == [f"read {paths[0]}: 6 rows", f"read {paths[1]}: 6 rows"]
    assert "12 rows, 2 of 2 files done" in read_lines[-1]
    total = report["bytes_sent"]
    assert f"sending: 2 of 2 bodies done, {progress.amount(total)} of {progress.amount(total)}, in " in printed
    assert printed.count("delivered: 6 rows") == 2  # the per-body lines stay
