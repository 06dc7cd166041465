"""Reasons on screen: the most frequent reasons rows were rejected, counted by a combine,
each with one example; the dead letter still holds every row."""
import json


from anycost import cbf
from anycost.outcomes import reject_reasons as rejects, report
from anycost.config import RunConfig
from tests.support import read_dead_letters, run_cli, write_csv


def record(row, reason, file="in.csv", **values):
    return {"file": file, "row": row, "reason": reason, "values": values}


def tally_of(records):
    tally = rejects.empty()
    for one in records:
        rejects.add(tally, one)
    return tally


def test_a_reason_without_its_values_groups_rows_refused_for_the_same_rule():
    assert rejects.reason_kind("cost/cost: 'abc' is not a decimal number") == \
        rejects.reason_kind("cost/cost: '1,5' is not a decimal number") == "cost/cost: '…' is not a decimal number"
    assert rejects.reason_kind('resource/id: "it\'s" bad') == "resource/id: '…' bad"
    assert rejects.reason_kind("the row is 5000123 bytes of JSON, at most 5000000") == \
        "the row is N bytes of JSON, at most N"
    # small numbers and names with digits say something about the rule: kept
    assert rejects.reason_kind("the row has 2 fields where the header has 3") == \
        "the row has 2 fields where the header has 3"
    assert rejects.reason_kind("resource/tag:env2024 contains a control character") == \
        "resource/tag:env2024 contains a control character"


def test_the_offending_value_is_the_column_the_reason_names():
    values = {"cost/cost": "abc", "cost/cost_extra": "x", "lineitem/type": "Usage"}
    assert rejects.offending_value(values, "cost/cost: 'abc' is not a decimal number") == ("cost/cost", "abc")
    assert rejects.offending_value({"text": "a,b"}, "the row has 2 fields") == (None, None)
    long = {"resource/id": "x" * 500}
    assert rejects.offending_value(long, "resource/id contains a control character") == (
        "resource/id", "x" * 80 + "...")


def test_counts_most_frequent_first_with_the_first_row_as_the_example():
    records = [record(9, "cost/cost: 'b' is not a decimal number", **{"cost/cost": "b"}),
               record(4, "cost/cost: 'a' is not a decimal number", **{"cost/cost": "a"}),
               record(5, "lineitem/type is not one of: Usage", **{"lineitem/type": "x"}),
               record(2, "cost/cost: 'c' is not a decimal number; lineitem/type is not one of: Usage",
                      file="b.csv", **{"cost/cost": "c", "lineitem/type": "y"})]
    top = rejects.top(tally_of(records))
    assert [(entry["reason"], entry["count"]) for entry in top] == [
        ("cost/cost: '…' is not a decimal number", 3), ("lineitem/type is not one of: Usage", 2)]
    assert top[0]["example"] == {"file": "b.csv", "row": 2, "reason": "cost/cost: 'c' is not a decimal number",
                                 "column": "cost/cost", "value": "c"}
    assert (top[1]["example"]["file"], top[1]["example"]["row"], top[1]["example"]["value"]) == ("b.csv", 2, "y")


def test_merging_tallies_gives_the_same_answer_as_one_tally():
    records = [record(i, f"rule {i % 7}: '{i}' is wrong", **{"rule": str(i)}) for i in range(1, 200)]
    whole = rejects.top(tally_of(records), limit=7)
    parts = [tally_of(records[i::3]) for i in range(3)]
    assert rejects.top(rejects.merge(parts), limit=7) == whole
    assert sum(entry["count"] for entry in whole) == 199


def test_beyond_the_top_the_rest_is_one_line_and_too_many_kinds_fold_into_other(monkeypatch):
    top = rejects.top(tally_of([record(i, f"rule {chr(97 + i)}") for i in range(8)]), limit=5)
    assert len(top) == 6 and top[-1] == {"reason": rejects.OTHER, "count": 3, "example": None}
    monkeypatch.setattr(rejects, "MAX_KINDS", 3)
    tally = tally_of([record(i, f"rule {chr(97 + i)}") for i in range(6)])
    assert len(tally) == 4 and tally[rejects.OTHER][0] == 3


def test_the_table_shows_each_reason_with_its_count_and_example():
    reasons = rejects.top(tally_of([record(1200, "cost/cost: 'abc' is not a decimal number", **{"cost/cost": "abc"})]
                                   * 1234 + [record(7, "the row has 2 fields where the header has 3", text="a,b")]))
    built = report.build(RunConfig(inputs=("in.csv",), connection_id="c1"), (2000, 1235, 0), [], [],
                         ["dead/rejected-00000-of-00001.jsonl"], reject_reasons=reasons)
    json.dumps(built)
    lines = report.render(built).splitlines()
    start = lines.index("most frequent reasons rows were rejected:")
    assert lines[start + 1:start + 5] == [
        "  1,234  cost/cost: '…' is not a decimal number",
        "         e.g. in.csv row 1200: cost/cost = 'abc'",
        "      1  the row has 2 fields where the header has 3",
        "         e.g. in.csv row 7",
    ]
    assert lines[start + 5] == "rejected rows are in: dead/rejected-00000-of-00001.jsonl"


def test_a_run_with_rejects_prints_the_reasons_and_the_dead_letter_holds_every_row(emulator, tmp_path, capsys):
    header = ["time/usage_start", "cost/cost", "lineitem/type"]
    good = [["2024-09-01T00:00:00Z", "1.5", "Usage"]]
    bad = [["2024-09-01T00:00:00Z", f"x{i}", "Usage"] for i in range(30)] + \
          [["2024-09-01T00:00:00Z", "2", "Bogus"]] * 4
    paths = [write_csv(str(tmp_path / f"in{n}.csv"), header, good + bad[n::2]) for n in range(2)]
    code, built, printed = run_cli(
        ["--input", str(tmp_path / "in*.csv"), "--connection_id", "c1", f"--api_url={emulator.url}",
         f"--report_path={tmp_path}/report.json", f"--dead_letter_path={tmp_path}/dead/rejected"], capsys)
    assert code == 1 and built["rows_rejected"] == 34
    assert [(entry["reason"], entry["count"]) for entry in built["reject_reasons"]] == [
        ("cost/cost: '…' is not a decimal number", 30),
        ("lineitem/type '…' is not one of: " + ", ".join(sorted(cbf.LINEITEM_TYPES)), 4)]
    assert built["reject_reasons"][0]["example"] == {
        "file": paths[0], "row": 2, "reason": "cost/cost: 'x0' is not a decimal number",
        "column": "cost/cost", "value": "x0"}
    assert "most frequent reasons rows were rejected:" in printed
    assert f"e.g. {paths[0]} row 2: cost/cost = 'x0'" in printed
    assert len(read_dead_letters(built)) == 34  # every row, not only the examples
    assert emulator.totals() == {}  # over the limit: nothing posted


# ----- the dead letter's parts (pipeline.rejects) ----------------------------------------------

def test_each_bundle_writes_one_part_with_its_rows_and_their_tally(tmp_path):
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from pipeline import rejects as parts_of
    folder = str(tmp_path / "parts")
    records = [record(i, "cost/cost: 'x' is not a decimal number", cost="x") for i in range(2, 40)]
    records += [record(50, "lineitem/type 'Bogus' is not one of: Usage")]
    out = tmp_path / "out"
    p = beam.Pipeline(runner=FnApiRunner())
    _ = (p | beam.Create(records) | beam.ParDo(parts_of._WriteRejectParts(folder))
         | beam.Map(lambda part: json.dumps(part._asdict())) | beam.io.WriteToText(str(out), shard_name_template=""))
    p.run().wait_until_finish()
    parts = [parts_of.RejectPart(**json.loads(line)) for line in open(out)]
    assert parts and sum(part.rows for part in parts) == len(records)
    lines = [json.loads(line) for part in parts for line in open(part.path)]
    assert sorted(lines, key=lambda r: r["row"]) == records
    assert sorted(part.path for part in parts) == sorted(str(path) for path in (tmp_path / "parts").iterdir())
    assert parts_of.tally(parts) == {"rows": len(records), "reasons": rejects.top(tally_of(records))}


def write_part(folder, name, records):
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    from pipeline.rejects import RejectPart
    return RejectPart(str(path), len(records), tally_of(records))


def test_the_dead_letter_gathers_the_parts_the_runner_kept_and_removes_the_folder(tmp_path):
    from pipeline.rejects import gather
    folder = tmp_path / "rejected-parts-1"
    kept = [write_part(folder, "b.jsonl", [record(3, "r")]), write_part(folder, "a.jsonl", [record(1, "r"), record(2, "r")])]
    write_part(folder, "retried.jsonl", [record(1, "r")])  # a failed attempt's part: no RejectPart reaches the report
    written = gather(kept, str(tmp_path / "rejected"), str(folder))
    assert written == [str(tmp_path / "rejected-00000-of-00001.jsonl")]
    assert [json.loads(line)["row"] for line in open(written[0])] == [1, 2, 3]  # each kept row once
    assert not folder.exists()


def test_gathering_nothing_writes_no_dead_letter(tmp_path):
    from pipeline.rejects import gather
    assert gather([], str(tmp_path / "rejected"), str(tmp_path / "parts")) == [] and list(tmp_path.iterdir()) == []


def test_a_retried_report_step_finds_the_dead_letter_whole(tmp_path):
    import pytest
    from pipeline.rejects import gather
    folder = tmp_path / "parts"
    parts = [write_part(folder, "a.jsonl", [record(1, "r")])]
    first = gather(parts, str(tmp_path / "rejected"), str(folder))
    assert gather(parts, str(tmp_path / "rejected"), str(folder)) == first  # parts gone, dead letter there
    assert len(open(first[0]).readlines()) == 1
    lost = [write_part(tmp_path / "other", "a.jsonl", [record(1, "r")])]
    (tmp_path / "other" / "a.jsonl").unlink()
    with pytest.raises(OSError, match="part files are gone"):
        gather(lost, str(tmp_path / "elsewhere"), str(tmp_path / "other"))


def test_a_failed_run_leaves_no_parts_folder(tmp_path, capsys):
    """The gate holds the run back and the sink cannot write its dry-run bodies: the job fails
    after the parts are written, and the command line removes them on its way out."""
    header = ["time/usage_start", "cost/cost"]
    write_csv(str(tmp_path / "in.csv"), header, [["2024-09-01T00:00:00Z", "x"], ["2024-09-01T00:00:00Z", "1"]])
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the dry run wants a folder")
    code, _, printed = run_cli(["--input", str(tmp_path / "in.csv"), "--connection_id", "c1", "--dry_run",
                                "--max_rejected_rows", "5", "--output_dir", str(blocker / "bodies"),
                                f"--report_path={tmp_path}/report.json",
                                f"--dead_letter_path={tmp_path}/dead/rejected"], capsys)
    assert code != 0 and "did not finish" in printed
    assert [path.name for path in (tmp_path / "dead").iterdir() if "parts" in path.name] == []
