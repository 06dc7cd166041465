"""WriteToAnyCost in a user's own pipeline: beam.Create of dict rows or record batches ->
WriteToAnyCost -> the emulator on 127.0.0.1, on the in-process FnApiRunner."""
import datetime as dt
import json
import pickle
import random
from decimal import Decimal

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to

from anycost_emulator import Emulator
from tests.support import TEST_KEY, emulator_totals, run_and_collect
from transforms import ReadCbf, WriteToAnyCost, WriteToAnyCostResult, __all__ as exported

START, COST, AMOUNT, RESOURCE = "time/usage_start", "cost/cost", "usage/amount", "resource/id"
UTC_PLUS_2 = dt.timezone(dt.timedelta(hours=2))


@pytest.fixture
def emu(monkeypatch):
    monkeypatch.setenv("CLOUDZERO_API_KEY", TEST_KEY)
    with Emulator(api_key=TEST_KEY) as emulator:
        yield emulator


def run(elements, tmp_path, batches=1, **params):
    """Run `elements` (split over `batches` Creates) through WriteToAnyCost; returns the
    result PCollections' contents, read back from the files the pipeline wrote."""
    out = tmp_path / f"out-{random.random()}"
    p = beam.Pipeline(runner=FnApiRunner())
    parts = [p | f"Create{i}" >> beam.Create(elements[i::batches], reshuffle=False) for i in range(batches)]
    rows = parts[0] if batches == 1 else tuple(parts) | beam.Flatten()
    result = rows | WriteToAnyCost(**params)
    assert isinstance(result, WriteToAnyCostResult)
    return run_and_collect(p, result, out)


def mixed_rows():
    """Good rows of every value type, over two connections and two months, plus bad rows."""
    good = [
        {"conn": "east", START: "2024-01-31T23:00:00Z", COST: "10.01", RESOURCE: "a"},
        {"conn": "east", START: dt.datetime(2024, 2, 1, 1, 30, tzinfo=UTC_PLUS_2), COST: 2, RESOURCE: "b"},  # Jan 31
        {"conn": "east", START: dt.datetime(2024, 2, 1, 5), COST: 0.1, AMOUNT: 3, RESOURCE: "c"},
        {"conn": "east", START: dt.date(2024, 2, 2), COST: Decimal("1.000000000000000000001"), RESOURCE: "d"},
        {"conn": "west", START: "2024-02-03T04:00:00Z", COST: Decimal("-0.5"), AMOUNT: None, RESOURCE: "e"},
        {"conn": "west", START: dt.datetime(2024, 2, 3, 4, 15), COST: 1e-7, RESOURCE: "f"},
    ]
    bad = [
        {"conn": "east", START: "2024-02-04T00:00:00Z", COST: True, RESOURCE: "g"},
        {"conn": "west", START: "yesterday", COST: "1", RESOURCE: "h"},
        {"conn": "west", START: "2024-02-04T00:00:00Z", COST: float("nan"), RESOURCE: "i"},
        {"conn": "no way!", START: "2024-02-04T00:00:00Z", COST: "1", RESOURCE: "j"},
    ]
    return good, bad


EXPECTED_TOTALS = {
    "east": {"2024-01": (2, Decimal("12.01")),
             "2024-02": (2, Decimal("0.1") + Decimal("1.000000000000000000001"))},
    "west": {"2024-02": (2, Decimal("-0.5") + Decimal("0.0000001"))},
}
EXPECTED_REASONS = sorted([
    "cost/cost: a value of type bool has no Common Bill Format text form",
    "time/usage_start: 'yesterday' is not an ISO 8601 timestamp (YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM])",
    "cost/cost: nan is not a finite number",
    "conn is not a valid connection id (only letters, digits, '_' and '-', 1 to 128 characters)",
])


@pytest.mark.parametrize("operation", ["sum", "replace_hourly"])
def test_mixed_python_values_arrive_exactly_and_bad_rows_are_rejected(emu, tmp_path, operation):
    good, bad = mixed_rows()
    out = run(good + bad, tmp_path, stream_column="conn", operation=operation, api_url=emu.url,
              max_rejected_rows=4)
    assert emulator_totals(emu) == EXPECTED_TOTALS
    assert sorted(r["reason"] for r in out["rejected"]) == EXPECTED_REASONS
    assert {r["values"][RESOURCE] for r in out["rejected"]} == {"g", "h", "i", "j"}
    assert out["failed"] == []
    assert len(out["delivered"]) == emu.applied_drops == 3
    assert {(d["connection_id"], d["month"], d["rows"], d["status"]) for d in out["delivered"]} == {
        ("east", "2024-01", 2, "delivered"), ("east", "2024-02", 2, "delivered"), ("west", "2024-02", 2, "delivered")}
    # The stream column is removed from the rows; each value has its file-path text.
    assert sorted(emu.rows("east", "2024-01"), key=lambda r: r[RESOURCE]) == [
        {START: "2024-01-31T23:00:00Z", COST: "10.01", RESOURCE: "a"},
        {START: "2024-01-31T23:30:00Z", COST: "2", RESOURCE: "b"}]
    assert sorted(emu.rows("east", "2024-02"), key=lambda r: r[RESOURCE]) == [
        {START: "2024-02-01T05:00:00Z", COST: "0.1", AMOUNT: "3", RESOURCE: "c"},
        {START: "2024-02-02T00:00:00Z", COST: "1.000000000000000000001", RESOURCE: "d"}]
    assert emu.concurrency_violations == 0


def test_over_the_reject_limit_nothing_is_posted_and_every_body_is_in_failed(emu, tmp_path):
    good, bad = mixed_rows()
    out = run(good + bad, tmp_path, stream_column="conn", api_url=emu.url, max_rejected_rows=3)
    assert [r for r in emu.requests if r.method == "POST"] == []
    assert out["delivered"] == []
    assert len(out["rejected"]) == 4
    assert sorted((f["connection_id"], f["month"], f["status"]) for f in out["failed"]) == [
        ("east", "2024-01", "not_sent"), ("east", "2024-02", "not_sent"), ("west", "2024-02", "not_sent")]
    for failed in out["failed"]:
        assert failed["message"] == ("4 rows were rejected, more than max_rejected_rows=3; nothing was posted. "
                                     "Fix the rows in result.rejected and run again")


def test_a_month_over_its_limits_is_in_failed_and_holds_a_replace_drop_back(emu, tmp_path):
    rows = [{START: f"2024-03-01T{h:02d}:00:00Z", COST: "1", RESOURCE: f"r{h}"} for h in range(24)]
    rows += [{START: "2024-04-01T00:00:00Z", COST: "1"}]
    out = run(rows, tmp_path, connection_id="c1", operation="replace_drop", max_body_bytes=1000, api_url=emu.url)
    assert emu.post_count == 0 and out["delivered"] == []
    refused = [f for f in out["failed"] if f["status"] == "refused"]
    assert [(f["month"], f["rows"]) for f in refused] == [("2024-03", 24)]
    assert "the month must fit in one body" in refused[0]["message"]
    held = [f for f in out["failed"] if f["status"] == "not_sent"]
    assert [f["month"] for f in held] == ["2024-04"]
    assert held[0]["message"].startswith("replace_drop: c1 2024-03 was refused")


def typed_batch(n, offset=0):
    return pa.RecordBatch.from_pydict({
        START: pa.array([dt.datetime(2024, 5, 1 + i % 28, i % 24) for i in range(offset, offset + n)],
                        pa.timestamp("s", tz="UTC")),
        COST: pa.array([Decimal(i) / 100 for i in range(offset, offset + n)], pa.decimal128(12, 2)),
        AMOUNT: pa.array([i * 0.25 for i in range(offset, offset + n)], pa.float64()),
        RESOURCE: pa.array([f"vm-{i % 7}" for i in range(offset, offset + n)]),
    })


def test_record_batches_arrive_exactly(emu, tmp_path):
    batches = [typed_batch(400, 0), typed_batch(600, 400)]
    bad = pa.RecordBatch.from_pydict({START: ["2024-05-01T00:00:00Z"], COST: ["1"], "lineitem/type": [True]})
    out = run(batches + [bad], tmp_path, connection_id="c1", api_url=emu.url, max_body_bytes=20_000,
              max_rejected_rows=1)
    assert emulator_totals(emu) == {"c1": {"2024-05": (1000, sum(Decimal(i) / 100 for i in range(1000)))}}
    assert [r["reason"] for r in out["rejected"]] == [
        "lineitem/type has type bool, which has no Common Bill Format text form"]
    assert len(out["delivered"]) == emu.applied_drops > 1
    assert all(d["bytes"] <= 20_000 for d in out["delivered"])


def keys_and_rows(emu):
    posts = [r for r in emu.requests if r.method == "POST"]
    return [r.idempotency_key for r in posts], emu.rows("c1", "2024-05")


def test_the_same_rows_in_another_order_and_bundling_give_byte_identical_bodies(emu, tmp_path):
    batch = typed_batch(1000)
    as_dicts = [{START: row[START].replace(tzinfo=None), COST: row[COST], AMOUNT: row[AMOUNT], RESOURCE: row[RESOURCE]}
                for row in batch.to_pylist()]
    params = dict(connection_id="c1", api_url=emu.url, max_body_bytes=10_000)
    run(as_dicts, tmp_path, **params)
    first = keys_and_rows(emu)
    assert len(first[0]) > 3 and len(first[1]) == 1000
    shuffled = as_dicts[:]
    random.Random(7).shuffle(shuffled)
    for elements, batches in ((shuffled, 5),  # other order, five sources flattened
                              ([batch.slice(0, 333), batch.slice(333)], 2)):  # record batches
        emu.reset()
        run(elements, tmp_path, batches=batches, **params)
        assert keys_and_rows(emu) == first  # sha256 keys over the bodies: same keys, same bytes
    emu.reset()
    run(as_dicts[1:], tmp_path, **params)  # one row fewer: other bodies (the check can fail)
    assert keys_and_rows(emu)[0] != first[0]


def test_a_rerun_with_the_ledger_posts_nothing_again(emu, tmp_path):
    rows = [{START: f"2024-06-01T{h:02d}:00:00Z", COST: Decimal(h), RESOURCE: "r"} for h in range(24)]
    params = dict(connection_id="c1", api_url=emu.url, max_body_bytes=1000, state_path=str(tmp_path / "state"))
    first = run(rows, tmp_path, **params)
    posts = emu.post_count
    assert posts > 1 and {d["status"] for d in first["delivered"]} == {"delivered"}
    again = run(list(reversed(rows)), tmp_path, **params)
    assert emu.post_count == posts
    assert sorted(d["idempotency_key"] for d in again["delivered"]) == sorted(
        d["idempotency_key"] for d in first["delivered"])
    assert {d["status"] for d in again["delivered"]} == {"already_delivered"}


def focus_rows():
    return [
        {"ChargePeriodStart": dt.datetime(2024, 8, 1, h, tzinfo=dt.timezone.utc), "BilledCost": Decimal(h) / 4,
         "ChargeCategory": "Usage", "BillingCurrency": "USD", "ResourceId": f"vm-{h}", "ServiceName": "Compute",
         "Tags": json.dumps({"team": "data"})}
        for h in range(6)] + [
        {"ChargePeriodStart": dt.datetime(2024, 8, 1, 7, tzinfo=dt.timezone.utc), "BilledCost": Decimal(3),
         "ChargeCategory": "Usage", "BillingCurrency": "EUR", "ResourceId": "vm-eur"}]


@pytest.mark.parametrize("as_batches", [False, True])
def test_focus_rows_are_mapped_as_the_file_path_maps_them(emu, tmp_path, as_batches):
    data = focus_rows()
    elements = [pa.RecordBatch.from_pylist(data[:4]), pa.RecordBatch.from_pylist(data[4:])] if as_batches else data
    out = run(elements, tmp_path, connection_id="c1", input_format="focus", api_url=emu.url, max_rejected_rows=1)
    assert emulator_totals(emu) == {"c1": {"2024-08": (6, sum(Decimal(h) / 4 for h in range(6)))}}
    assert [r["values"]["ResourceId"] for r in out["rejected"]] == ["vm-eur"]
    assert "EUR" in out["rejected"][0]["reason"]
    stored = sorted(emu.rows("c1", "2024-08"), key=lambda r: r[RESOURCE])[0]
    assert stored[RESOURCE] == "vm-0" and stored["resource/service"] == "Compute"
    assert stored["resource/tag:team"] == "data"


def test_an_element_that_is_not_a_row_is_rejected_not_a_crash(emu, tmp_path):
    out = run([{START: "2024-07-01T00:00:00Z", COST: "1"}, ["not", "a", "row"]], tmp_path,
              connection_id="c1", api_url=emu.url, max_rejected_rows=1)
    assert [r["reason"] for r in out["rejected"]] == [
        "an element of type list is not a dict, beam.Row, pyarrow.RecordBatch or CbfBatch"]
    assert emulator_totals(emu) == {"c1": {"2024-07": (1, Decimal(1))}}


def test_the_result_pcollections_with_assert_that(emu):
    with beam.Pipeline(runner=FnApiRunner()) as p:
        result = (p | beam.Create([{START: "2024-07-01T00:00:00Z", COST: "1.5"}, {START: "2024-07-01", COST: "x"}])
                  | WriteToAnyCost(connection_id="c1", api_url=emu.url, max_rejected_rows=1))
        assert_that(result.delivered | beam.Map(lambda d: (d["month"], d["rows"], d["status"])),
                    equal_to([("2024-07", 1, "delivered")]), label="Delivered")
        assert_that(result.failed, equal_to([]), label="Failed")
        assert_that(result.rejected | beam.Map(lambda r: r["values"][COST]), equal_to(["x"]), label="Rejected")
    assert emulator_totals(emu) == {"c1": {"2024-07": (1, Decimal("1.5"))}}


@pytest.mark.parametrize("params,named", [
    ({}, "connection_id"),
    ({"connection_id": "a", "stream_column": "b"}, "stream_column"),
    ({"connection_id": "has space"}, "connection_id"),
    ({"connection_id": "a", "operation": "add"}, "operation"),
    ({"connection_id": "a", "max_body_bytes": 5_000_001}, "max_body_bytes"),
    ({"connection_id": "a", "max_body_bytes": 10}, "max_body_bytes"),
    ({"connection_id": "a", "api_url": "http://api.example.com"}, "api_url"),
    ({"connection_id": "a", "api_url": "ftp://127.0.0.1"}, "api_url"),
    ({"connection_id": "a", "api_key_secret": "my-secret"}, "api_key_secret"),
    ({"connection_id": "a", "api_key_env": ""}, "api_key_env"),
    ({"connection_id": "a", "max_rejected_rows": -1}, "max_rejected_rows"),
    ({"connection_id": "a", "max_attempts": 0}, "max_attempts"),
    ({"connection_id": "a", "max_concurrent_streams": 0}, "max_concurrent_streams"),
    ({"connection_id": "a", "max_retry_seconds": -1}, "max_retry_seconds"),
    ({"connection_id": "a", "lease_wait_seconds": -1}, "lease_wait_seconds must be a number of seconds"),
    ({"connection_id": "a", "allowed_lateness_seconds": -5}, "allowed_lateness_seconds"),
    ({"connection_id": "a", "test_namespace": "a\nb"}, "test_namespace"),
    ({"connection_id": "a", "input_format": "xml"}, "input_format"),
])
def test_bad_configuration_raises_a_value_error_naming_the_parameter(params, named):
    with pytest.raises(ValueError) as raised:
        WriteToAnyCost(**params)
    assert named in str(raised.value) and "--" not in str(raised.value)


def test_good_configuration_is_accepted():
    WriteToAnyCost(connection_id="a", api_url="http://127.0.0.1:1234", max_body_bytes=1000)
    WriteToAnyCost(stream_column="conn", api_key_secret="projects/p/secrets/s/versions/1",
                   operation="replace_hourly", max_rejected_rows=10)


def test_replace_drop_on_unbounded_input_is_refused_when_the_pipeline_is_built():
    p = beam.Pipeline(runner=FnApiRunner())
    events = p | test_stream.TestStream().add_elements([{START: "2024-01-01T00:00:00Z", COST: "1"}])
    assert events.is_bounded is False
    with pytest.raises(ValueError, match="replace_drop.*bounded input"):
        _ = events | WriteToAnyCost(connection_id="c1", operation="replace_drop")


def test_the_api_key_is_not_in_the_pickled_transform_or_the_pipeline(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOUDZERO_API_KEY", TEST_KEY)
    transform = WriteToAnyCost(connection_id="c1", api_url="http://127.0.0.1:9")
    assert TEST_KEY.encode() not in pickle.dumps(transform)
    p = beam.Pipeline(runner=FnApiRunner())
    _ = p | beam.Create([{START: "2024-01-01T00:00:00Z", COST: "1"}]) | transform
    assert TEST_KEY.encode() not in p.to_runner_api().SerializeToString()


def test_the_public_names():
    assert set(exported) >= {"WriteToAnyCost", "ReadCbf", "WriteToAnyCostResult"}
    assert WriteToAnyCost.__doc__.lstrip().startswith("Delivers") and "Args:" in WriteToAnyCost.__doc__
    assert "Example" in ReadCbf.__doc__


def test_a_hold_on_rejected_rows_is_logged_once_in_the_beam_users_words(emu, tmp_path, caplog):
    good, bad = mixed_rows()
    caplog.set_level("WARNING")
    out = run(good + bad[:1], tmp_path, stream_column="conn", api_url=emu.url)  # max_rejected_rows=0
    assert out["delivered"] == [] and [r for r in emu.requests if r.method == "POST"] == []
    holds = [r for r in caplog.records if r.levelname == "WARNING" and "nothing was posted" in r.getMessage()]
    assert len(holds) == 1, [r.getMessage() for r in caplog.records]
    message = holds[0].getMessage()
    assert "more than max_rejected_rows=0" in message and "result.rejected" in message
    assert message.startswith("WriteToAnyCost held back every body: 1 row")
    assert "--max_rejected_rows" not in message
