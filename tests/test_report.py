"""anycost.outcomes.report: the run report, its table, the exit status and the reject gate."""
import json

import pytest

from anycost.outcomes import report
from anycost.config import DRY_RUN, RunConfig
from anycost.delivery import ALREADY_DELIVERED, DELIVERED, FAILED, NOT_SENT, BodyResult
from anycost.bodies.packing import StreamMonthPlan

CONFIG = RunConfig(inputs=("in.csv",), connection_id="c1")


def summary(connection, month, rows, cost="10", refused=None, bodies=2, size=1000):
    """A month's plan: `bodies` bodies of `size` bytes (none when refused)."""
    bodies = 0 if refused else bodies
    return StreamMonthPlan(connection, month, rows, rows * 100, cost, [], refused, bodies, bodies * size)


def result(connection, month, seq, status, rows=5, size=1000, message="", drop_id=None, count=2):
    return BodyResult(connection, month, seq, count, rows, size, status, attempts=1, drop_id=drop_id,
                      message=message, idempotency_key=f"k-{connection}-{month}-{seq}")


def test_success():
    summaries = [summary("c1", "2024-09", 10), summary("c1", "2024-08", 10), summary("c0", "2024-08", 5, bodies=1)]
    results = [result("c1", "2024-08", 1, DELIVERED, drop_id="d1"), result("c1", "2024-08", 2, DELIVERED),
               result("c1", "2024-09", 1, DELIVERED), result("c1", "2024-09", 2, DELIVERED),
               result("c0", "2024-08", 1, DELIVERED, count=1)]
    built = report.build(CONFIG, (25, 0, 0), summaries, results)
    assert built["ok"] and report.exit_code(built) == 0 and built["blocked"] is None
    assert (built["rows_read"], built["rows_rejected"], built["bodies_sent"], built["bytes_sent"]) == (25, 0, 5, 5000)
    assert list(built["streams"]) == ["c0", "c1"] and list(built["streams"]["c1"]) == ["2024-08", "2024-09"]
    month = built["streams"]["c1"]["2024-08"]
    assert {k: month[k] for k in ("rows", "bodies", "bytes", "status", "cost")} == {
        "rows": 10, "bodies": 2, "bytes": 2000, "status": "delivered", "cost": "10"}
    assert month["drop_ids"] == ["d1"]
    json.dumps(built)  # the report is JSON as it stands
    text = report.render(built)
    assert "result: OK" in text and "NOTHING POSTED" not in text
    assert "rows read 25 | rows rejected 0 | bodies sent 5 | bytes sent 5,000" in text
    lines = text.splitlines()
    assert any(line.startswith("c1") and "2024-09" in line and "delivered" in line for line in lines)


def test_empty_run_is_ok():
    built = report.build(CONFIG, (0, 0, 0), [], [])
    assert built["ok"] and built["streams"] == {} and report.exit_code(built) == 0
    assert "result: OK" in report.render(built)


def test_rejects_within_the_limit_are_ok():
    config = RunConfig(inputs=("in.csv",), connection_id="c1", max_rejected_rows=3)
    built = report.build(config, (10, 3, 0), [summary("c1", "2024-08", 7)],
                         [result("c1", "2024-08", 1, DELIVERED, count=1)], dead_letter_files=["dl-0.jsonl"])
    assert built["ok"] and report.exit_code(built) == 0
    assert "rejected rows are in: dl-0.jsonl" in report.render(built)


def test_rejects_over_the_limit_block_everything():
    stats = (10, 1, 0)  # rows read, rejected, files broken
    summaries = [summary("c1", "2024-08", 9)]
    reason = report.gate_reason(1, 0, summaries, CONFIG)
    assert "1 row was rejected, more than --max_rejected_rows 0" in reason and "nothing was posted" in reason
    built = report.build(CONFIG, stats, summaries, [result("c1", "2024-08", 1, NOT_SENT, count=1)],
                         dead_letter_files=["gs://b/dead-00000.jsonl"])
    assert not built["ok"] and report.exit_code(built) == 1
    assert built["blocked"] == reason and built["streams"]["c1"]["2024-08"]["status"] == "not_sent"
    assert built["bodies_sent"] == 0 and built["bytes_sent"] == 0
    text = report.render(built)
    assert f"NOTHING POSTED: {reason}" in text and "gs://b/dead-00000.jsonl" in text and "result: FAILED" in text


def test_gate_checks_whole_input_before_posting():
    assert report.gate_reason(0, 0, [], CONFIG) is None
    assert report.gate_reason(2, 0, [], RunConfig(inputs=(), max_rejected_rows=2)) is None
    assert report.gate_reason(3, 0, [], RunConfig(inputs=(), max_rejected_rows=2)) is not None


def test_file_errors_block_and_fail():
    stats = (4, 0, 1)
    reason = report.gate_reason(0, 1, [], CONFIG)
    assert "1 input file(s) could not be read" in reason
    built = report.build(CONFIG, stats, [], [], file_errors=["bad.csv.gz: reading stopped part-way: EOF"])
    assert not built["ok"] and report.exit_code(built) == 1
    text = report.render(built)
    assert "file error: bad.csv.gz: reading stopped part-way: EOF" in text and "NOTHING POSTED" in text


def test_refused_month_fails_the_run_but_does_not_block_sum():
    refusal = "1000001 rows: CloudZero holds at most 1,000,000 rows per stream and month"
    summaries = [summary("c1", "2024-08", 1_000_001, refused=refusal), summary("c1", "2024-09", 5)]
    assert report.gate_reason(0, 0, summaries, CONFIG) is None
    built = report.build(CONFIG, (1_000_006, 0, 0), summaries, [result("c1", "2024-09", 1, DELIVERED, count=1)])
    assert not built["ok"] and report.exit_code(built) == 1 and built["blocked"] is None
    refused = built["streams"]["c1"]["2024-08"]
    assert refused["status"] == "refused" and refused["messages"][0] == refusal
    assert built["streams"]["c1"]["2024-09"]["status"] == "delivered"
    assert f"refused: {refusal}" in report.render(built)


@pytest.mark.parametrize("operation", ["replace_hourly", "replace_drop"])
def test_refused_month_blocks_replace_operations(operation):
    config = RunConfig(inputs=(), connection_id="c1", operation=operation)
    summaries = [summary("c1", "2024-08", 5, refused="too big"), summary("c1", "2024-09", 5)]
    reason = report.gate_reason(0, 0, summaries, config)
    assert operation in reason and "c1 2024-08" in reason and "too big" in reason
    built = report.build(config, (10, 0, 0), summaries, [])
    assert not built["ok"] and built["streams"]["c1"]["2024-09"]["status"] == "not_sent"


def test_failures_and_not_sent():
    summaries = [summary("c1", "2024-08", 10), summary("c1", "2024-09", 5), summary("c2", "2024-08", 5)]
    results = [
        result("c1", "2024-08", 1, DELIVERED),
        result("c1", "2024-08", 2, FAILED, message="HTTP 403: CloudZero refused the API key"),
        result("c1", "2024-09", 1, NOT_SENT, count=1, message="not sent: c1 2024-08 body 2/2 failed earlier"),
        result("c2", "2024-08", 1, DELIVERED, count=1),
    ]
    built = report.build(CONFIG, (20, 0, 0), summaries, results)
    assert not built["ok"] and report.exit_code(built) == 1
    streams = built["streams"]
    assert streams["c1"]["2024-08"]["status"] == "failed"
    assert streams["c1"]["2024-08"]["counts"] == {DELIVERED: 1, FAILED: 1}
    assert streams["c1"]["2024-09"]["status"] == "not_sent"
    assert streams["c2"]["2024-08"]["status"] == "delivered"
    assert (built["bodies_sent"], built["bodies_failed"], built["bodies_not_sent"]) == (2, 1, 1)
    text = report.render(built)
    assert "failed: HTTP 403: CloudZero refused the API key" in text
    assert "not_sent: c1 2024-08 body 2/2 failed earlier" in text


def test_already_delivered_counts_as_success_but_not_as_sent():
    results = [result("c1", "2024-08", 1, ALREADY_DELIVERED, message="recorded in --state_path"),
               result("c1", "2024-08", 2, DELIVERED)]
    built = report.build(CONFIG, (10, 0, 0), [summary("c1", "2024-08", 10)], results)
    assert built["ok"] and built["bodies_sent"] == 1 and built["bodies_already_delivered"] == 1
    assert built["bytes_sent"] == 1000 and built["streams"]["c1"]["2024-08"]["status"] == "delivered"
    assert built["streams"]["c1"]["2024-08"]["messages"] == []
    assert "already delivered 1" in report.render(built)


def test_dry_run_is_ok():
    config = RunConfig(inputs=(), connection_id="c1", mode=DRY_RUN)
    built = report.build(config, (5, 0, 0), [summary("c1", "2024-08", 5)],
                         [result("c1", "2024-08", 1, "dry_run", count=1)])
    assert built["ok"] and built["streams"]["c1"]["2024-08"]["status"] == "dry_run"
    assert built["mode"] == DRY_RUN and "dry_run" in report.render(built).splitlines()[0]


def test_required_top_level_keys():
    built = report.build(CONFIG, (1, 0, 0), [summary("c1", "2024-08", 1)],
                         [result("c1", "2024-08", 1, DELIVERED, count=1)])
    for key in ("rows_read", "rows_rejected", "bodies_sent", "bytes_sent", "streams"):
        assert key in built
    assert set(built["streams"]["c1"]["2024-08"]) >= {"rows", "bodies", "bytes", "status"}



def test_a_partly_delivered_month_shows_its_delivered_and_undelivered_rows_and_cost_apart():
    import dataclasses
    summaries = [summary("c1", "2024-08", 10, cost="17.50", bodies=3)]
    results = [result("c1", "2024-08", 1, DELIVERED, rows=4, count=3),
               result("c1", "2024-08", 2, ALREADY_DELIVERED, rows=3, count=3),
               dataclasses.replace(result("c1", "2024-08", 3, FAILED, rows=3, count=3, message="HTTP 403: no"),
                                   cost="2.500000000000000000001")]
    built = report.build(CONFIG, (10, 0, 0), summaries, results)
    month = built["streams"]["c1"]["2024-08"]
    assert month["status"] == "failed" and (month["rows"], month["cost"]) == (10, "17.50")
    assert month["delivered_part"] == {"bodies": 2, "rows": 7, "bytes": 2000, "cost": "14.999999999999999999999"}
    assert month["undelivered_part"] == {"bodies": 1, "rows": 3, "bytes": 1000, "cost": "2.500000000000000000001"}
    lines = [line.split() for line in report.render(built).splitlines() if line.startswith("c1")]
    assert [line[:6] for line in lines] == [["c1", "2024-08", "7", "2", "2,000", "14.999999999999999999999"],
                                           ["c1", "2024-08", "3", "1", "1,000", "2.500000000000000000001"]]
    assert "delivered" in lines[0][6] and lines[1][6:8] == ["failed:", "HTTP"]


def test_a_month_with_nothing_delivered_keeps_one_line():
    import dataclasses
    results = [dataclasses.replace(result("c1", "2024-08", seq, NOT_SENT, message="held"), cost="1")
               for seq in (1, 2)]
    built = report.build(CONFIG, (10, 0, 0), [summary("c1", "2024-08", 10)], results)
    month = built["streams"]["c1"]["2024-08"]
    assert "delivered_part" not in month and "undelivered_part" not in month
    assert len([line for line in report.render(built).splitlines() if line.startswith("c1")]) == 1


def test_counts_of_one_are_singular():
    from anycost import words
    assert (words.plural(1, "row"), words.plural(2, "row"), words.plural(1000, "body", "bodies")) == (
        "1 row", "2 rows", "1,000 bodies")
    assert report.gate_reason(1, 0, [], CONFIG).startswith("1 row was rejected, more than")
    assert report.gate_reason(2, 0, [], CONFIG).startswith("2 rows were rejected, more than")
