"""WriteStreaming under TestStream on the BundleBasedDirectRunner (--streaming), against the emulator.

Two connections, rows over three hours, a late row within the allowed lateness and one
beyond it, a bad row that holds its hour back, and a bundle the runner replays after its POST.
"""
import collections
import os
from decimal import Decimal

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream
from apache_beam.transforms import window

from anycost import config
from anycost.inputs import hourly
from anycost_emulator import Emulator
from transforms import AggregateHourly, WriteToAnyCost
from transforms.streaming import _WriteStreaming

KEY_ENV = "STREAMING_TEST_KEY"
KEY = "streaming-key-81f3"
H0 = hourly.hour_seconds("2024-09-01T05:00:00Z")
LATENESS = 1800


def settings(emulator, operation, **overrides):
    """What `WriteToAnyCost` builds from its parameters."""
    values = dict(stream_column="conn", operation=operation, api_url=emulator.url, api_key_env=KEY_ENV,
                  max_attempts=3, max_retry_seconds=5.0, allowed_lateness_seconds=LATENESS)
    values.update(overrides)
    return config.WriteSettings(**values).check()


def row(conn, hour, minute, cost):
    return {"conn": conn, "time/usage_start": f"2024-09-01T{hour:02d}:{minute:02d}:00Z", "cost/cost": cost,
            "resource/service": "api"}


def at(seconds, *rows):
    return [window.TimestampedValue(r, H0 + seconds) for r in rows]


def the_stream():
    """Hour 05 closes at +3600, 06 at +7200, 07 at the end. Lateness is 1800 s."""
    return (test_stream.TestStream()
            .advance_watermark_to(H0)
            .add_elements(at(600, row("c1", 5, 10, "1"), row("c2", 5, 30, Decimal("10"))))
            .add_elements(at(1800, row("c1", 5, 20, 2.5), row("c1", 6, 10, "4")))
            .advance_watermark_to(H0 + 3601)
            .add_elements(at(3700, row("c2", 6, 40, "20"), row("c1", 7, 5, "8")))
            .add_elements(at(3800, row("c2", 7, 10, "not money"), row("c2", 7, 20, "7")))  # c2 07 is held
            .advance_watermark_to(H0 + 7201)
            .add_elements(at(7300, row("c1", 6, 50, "100")))  # late for 06, within the lateness
            .add_elements(at(7400, row("c1", 5, 55, "1000")))  # 3800 s after 05 ended: beyond it
            .advance_watermark_to_infinity())


@pytest.fixture
def emulator(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with Emulator(api_key=KEY) as running:
        yield running


def run(write):
    """The stream into `write` (a WriteToAnyCost, or a _WriteStreaming with a test hook)."""
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with beam.Pipeline(options=options) as p:
        result = p | the_stream() | write
        for name in ("delivered", "failed", "rejected"):
            getattr(result, name) | f"Collect{name}" >> beam.Map(_Collect(name))
    return {name: _Collect.take(name) for name in ("delivered", "failed", "rejected")}


class _Collect:
    """Gathers a PCollection in this process (the direct runner runs in it)."""
    seen = collections.defaultdict(list)

    def __init__(self, name):
        self._name = name

    def __call__(self, element):
        _Collect.seen[self._name].append(element)

    @classmethod
    def take(cls, name):
        return cls.seen.pop(name, [])


def stored_hours(emulator):
    """{(connection, hour): (rows, Decimal cost)} of what the emulator holds now."""
    hours = {}
    for conn in ("c1", "c2"):
        for stored in emulator.rows(conn, "2024-09"):
            key = (conn, stored["time/usage_start"][11:13])
            rows, cost = hours.get(key, (0, Decimal(0)))
            hours[key] = (rows + 1, cost + Decimal(stored["cost/cost"]))
    return hours


# What the emulator must hold at the end, per (connection, UTC hour): (rows, cost). Not the
# 1000 that came too late, nor c2's hour 07, held back by its bad row.
EXPECTED_HOURS = {
    ("c1", "05"): (2, Decimal("3.5")), ("c2", "05"): (1, Decimal("10")),
    ("c1", "06"): (2, Decimal("104")), ("c2", "06"): (1, Decimal("20")),
    ("c1", "07"): (1, Decimal("8")),
}


def write_to_anycost(emulator, operation):
    return WriteToAnyCost(stream_column="conn", operation=operation, api_url=emulator.url, api_key_env=KEY_ENV,
                          allowed_lateness_seconds=LATENESS)


def test_replace_hourly_sends_each_hour_whole_and_again_with_its_late_rows(emulator):
    out = run(write_to_anycost(emulator, "replace_hourly"))
    assert stored_hours(emulator) == EXPECTED_HOURS
    assert emulator.stats()["concurrency_violations"] == 0
    # c1 06 went twice (on time with 1 row, then whole with its late row); every other hour once.
    assert sorted((r["connection_id"], r["rows"], r["message"]) for r in out["delivered"]) == [
        ("c1", 1, "hour 2024-09-01T06:00:00Z, pane 0"), ("c1", 1, "hour 2024-09-01T07:00:00Z, pane 0"),
        ("c1", 2, "hour 2024-09-01T05:00:00Z, pane 0"), ("c1", 2, "hour 2024-09-01T06:00:00Z, pane 1"),
        ("c2", 1, "hour 2024-09-01T05:00:00Z, pane 0"), ("c2", 1, "hour 2024-09-01T06:00:00Z, pane 0")]
    assert emulator.stats()["applied_drops"] == 6
    (held,) = out["failed"]
    assert held["connection_id"] == "c2" and held["status"] == "not_sent" and "07:00:00Z" in held["message"]
    assert "max_rejected_rows 0" in held["message"]
    reasons = {r["values"]["cost/cost"]: r["reason"] for r in out["rejected"]}
    assert sorted(reasons) == ["1000", "not money"]
    assert "not a decimal number" in reasons["not money"]
    assert "beyond allowed_lateness_seconds 1800" in reasons["1000"] and "05:00:00Z" in reasons["1000"]


def test_sum_sends_every_row_once_late_rows_included(emulator):
    out = run(write_to_anycost(emulator, "sum"))
    assert stored_hours(emulator) == EXPECTED_HOURS
    assert emulator.stats()["concurrency_violations"] == 0
    assert sum(r["rows"] for r in out["delivered"]) == 7
    assert [r["status"] for r in out["failed"]] == ["not_sent"]


class FailOnceAfterPost:
    """Raises once, after the first pane of `connection` was posted: the runner then replays
    the bundle, POST included. A marker file makes "once" hold across DoFn copies."""

    def __init__(self, marker, connection):
        self._marker, self._connection = marker, connection

    def __call__(self, pane, results):
        if pane.connection_id == self._connection and results and not os.path.exists(self._marker):
            open(self._marker, "w").close()
            raise RuntimeError("test: the worker died after its POST")


@pytest.mark.parametrize("ledger", [False, True], ids=["idempotency-key", "ledger"])
def test_a_replayed_bundle_counts_nothing_twice(emulator, tmp_path, ledger):
    marker = tmp_path / "failed-once"
    write = _WriteStreaming(settings(emulator, "sum", state_path=str(tmp_path / "state") if ledger else None),
                           after_send=FailOnceAfterPost(str(marker), "c1"))
    out = run(write)
    assert marker.exists()  # the failure did happen, and the bundle ran again
    totals = emulator.totals()
    assert (totals["c1"]["2024-09"]["rows"], totals["c1"]["2024-09"]["cost"]) == (5, Decimal("115.5"))
    assert (totals["c2"]["2024-09"]["rows"], totals["c2"]["2024-09"]["cost"]) == (2, Decimal("30"))
    replays = emulator.stats()["idempotent_replays"]
    already = [r for r in out["delivered"] if r["status"] == "already_delivered"]
    # The replayed POST reached CloudZero under its first key (a replay), or the ledger skipped it.
    assert (len(already), replays) == ((1, 0) if ledger else (0, 1))


def test_usage_events_aggregated_per_hour_then_replaced_hour_by_hour(emulator):
    """The streaming example of docs/beam-api.md: events -> AggregateHourly -> WriteToAnyCost(replace_hourly)."""
    events = [row("c1", 5, minute, "0.1") for minute in range(0, 60, 5)]  # twelve events of 0.1
    stream = (test_stream.TestStream()
              .advance_watermark_to(H0)
              .add_elements(at(3000, *events))
              .advance_watermark_to(H0 + 3601)
              .add_elements(at(3700, row("c1", 5, 59, "0.05"), row("c1", 6, 1, "2")))  # 05 late, 06 on time
              .advance_watermark_to_infinity())
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with beam.Pipeline(options=options) as p:
        result = (p | stream | AggregateHourly(allowed_lateness_seconds=LATENESS)
                  | write_to_anycost(emulator, "replace_hourly"))
        result.failed | beam.Map(_Collect("failed"))
    assert _Collect.take("failed") == []
    # Hour 05: the on-time sum (1.2) and the late delta (0.05), sent whole again; no event row left.
    assert stored_hours(emulator) == {("c1", "05"): (2, Decimal("1.25")), ("c1", "06"): (1, Decimal("2"))}
    assert {r["time/usage_start"] for r in emulator.rows("c1", "2024-09")} == {
        "2024-09-01T05:00:00Z", "2024-09-01T06:00:00Z"}


def test_record_batches_are_split_by_hour_and_a_batch_too_late_or_an_odd_element_is_rejected(emulator):
    def batch(*rows):
        return pa.RecordBatch.from_pylist([{"time/usage_start": start, "cost/cost": Decimal(cost)}
                                           for start, cost in rows],
                                          schema=pa.schema([("time/usage_start", pa.string()),
                                                            ("cost/cost", pa.decimal128(10, 2))]))
    stream = (test_stream.TestStream()
              .advance_watermark_to(H0)
              .add_elements(at(1000, batch(("2024-09-01T05:10:00Z", "1.10"), ("2024-09-01T06:10:00Z", "2.20"),
                                           ("2024-09-01T05:20:00Z", "3.30"))))
              .add_elements(at(1100, "not a row"))
              .advance_watermark_to(H0 + 7201)
              .add_elements(at(7300 + LATENESS, batch(("2024-09-01T05:30:00Z", "9.99"),
                                                      ("2024-09-01T05:40:00Z", "9.99"))))
              .advance_watermark_to_infinity())
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with beam.Pipeline(options=options) as p:
        result = p | stream | WriteToAnyCost(connection_id="c1", operation="replace_hourly", api_url=emulator.url,
                                             api_key_env=KEY_ENV, allowed_lateness_seconds=LATENESS)
        result.rejected | beam.Map(_Collect("rejected"))
    assert stored_hours(emulator) == {("c1", "05"): (2, Decimal("4.40")), ("c1", "06"): (1, Decimal("2.20"))}
    rejected = _Collect.take("rejected")
    (odd,) = [r for r in rejected if "element" in r["values"]]
    assert "neither a dict nor a pyarrow.RecordBatch" in odd["reason"]
    rejected.remove(odd)
    assert len(rejected) == 2 and all("beyond allowed_lateness_seconds" in r["reason"] for r in rejected)
    assert sorted(r["values"]["time/usage_start"] for r in rejected) == ["2024-09-01T05:30:00Z", "2024-09-01T05:40:00Z"]
    assert all(r["values"]["cost/cost"] == "9.99" for r in rejected)


def test_sum_refuses_a_month_that_would_pass_what_cloudzero_holds(emulator):
    """CloudZero holds 990,000 rows of c1's 2024-09; an hour brings 70,000 more. Nothing of
    it is posted and the failed records name the month and the limit; c2 is delivered."""
    emulator.preload("c1", "2024-09", rows=990_000, cost="0")
    count = 70_000
    batch = pa.RecordBatch.from_pydict({
        "conn": ["c1"] * count, "time/usage_start": [f"2024-09-01T05:{i % 60:02d}:00Z" for i in range(count)],
        "cost/cost": ["1"] * count, "resource/service": [f"s{i}" for i in range(count)]})
    stream = (test_stream.TestStream().advance_watermark_to(H0)
              .add_elements([window.TimestampedValue(batch, H0 + 600)])
              .add_elements(at(700, row("c2", 5, 10, "2"), row("c2", 5, 20, "3")))
              .advance_watermark_to_infinity())
    options = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with beam.Pipeline(options=options) as p:
        result = p | stream | write_to_anycost(emulator, "sum")
        for name in ("delivered", "failed"):
            getattr(result, name) | f"Collect{name}" >> beam.Map(_Collect(name))
    delivered, failed = _Collect.take("delivered"), _Collect.take("failed")
    assert emulator.totals()["c1"]["2024-09"]["rows"] == 990_000  # nothing of the 70,000 was posted
    assert emulator.totals()["c2"]["2024-09"]["rows"] == 2
    assert {r["connection_id"] for r in delivered} == {"c2"}
    assert failed and {(r["connection_id"], r["status"]) for r in failed} == {("c1", "refused")}
    assert sum(r["rows"] for r in failed) == count
    message = failed[0]["message"]
    assert "CloudZero already holds 990,000 rows for 2024-09" in message and "1,000,000" in message
