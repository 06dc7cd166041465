"""Inputs people actually have, through the real CLI against the emulator: FOCUS exports
(CSV, gzip CSV, Parquet with map or struct Tags), a column map, and the CBF quirks, each
with its default and its switch."""
import csv
import datetime as dt
import gzip
import json
import os
import random
import re
import shutil
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support import read_dead_letters, run_cli, write_csv

FOCUS_CSV = os.path.join(os.path.dirname(__file__), "fixtures", "focus", "focus-1.0-mixed.csv")
TAG_KEY = re.compile(r"[A-Za-z0-9_.:/=+\-@]+")



def _common(emulator, tmp_path, name="report"):
    return [f"--api_url={emulator.url}", f"--report_path={tmp_path}/{name}.json",
            f"--dead_letter_path={tmp_path}/dead-{name}/rejected"]


def _focus_rows():
    with open(FOCUS_CSV, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _utc(text):
    """ChargePeriodStart as an aware UTC datetime, read independently of the connector."""
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _billed_per_month(rows):
    totals = {}
    for row in rows:
        month = _utc(row["ChargePeriodStart"]).astimezone(dt.timezone.utc).strftime("%Y-%m")
        count, cost = totals.get(month, (0, Decimal(0)))
        totals[month] = (count + 1, cost + Decimal(row["BilledCost"]))
    return totals


def _stored(emulator, connection):
    return {month: (entry["rows"], Decimal(entry["cost"])) for month, entry in emulator.totals()[connection].items()}


def _bodies(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob("*/*/*.json"))}


def _dry_run(emulator, tmp_path, path, name, *extra, capsys=None):
    out = tmp_path / f"bodies-{name}"
    code, report, printed = run_cli(["--input", str(path), "--connection_id", "focus", "--input_format", "focus",
                                     "--dry_run", "--output_dir", str(out), *extra]
                                    + _common(emulator, tmp_path, name), capsys)
    assert code == 0, printed
    return _bodies(out), report


# ----- FOCUS ---------------------------------------------------------------------------------

def test_focus_export_delivers_every_row_and_the_billed_cost_per_month_exactly(emulator, tmp_path, capsys):
    rows = _focus_rows()
    code, report, printed = run_cli(["--input", FOCUS_CSV, "--input_format", "focus", "--connection_id", "focus"]
                                    + _common(emulator, tmp_path), capsys)
    assert code == 0, printed
    assert report["rows_read"] == len(rows) == 18 and report["rows_rejected"] == 0
    assert _stored(emulator, "focus") == _billed_per_month(rows)
    assert _stored(emulator, "focus")["2024-08"][0] == 9  # 2024-08-31T23:00:00Z stays in August
    stored = emulator.rows("focus", "2024-08") + emulator.rows("focus", "2024-09")
    tag_columns = {key for row in stored for key in row if key.startswith("resource/tag:")}
    assert tag_columns and all(TAG_KEY.fullmatch(k[len("resource/tag:"):]) for k in tag_columns)
    assert {"resource/tag:user:Cost_Center", "resource/tag:environment", "resource/tag:cost_center",
            "resource/tag:_quipe", "resource/tag:budget_code", "resource/tag:project"} <= tag_columns
    assert all(row.get("resource/id") for row in stored if any(k.startswith("resource/tag:") for k in row))
    assert {row["lineitem/cloud_provider"] for row in stored} == {"AWS", "Microsoft", "Oracle"}
    assert not any(value == "NULL" for row in stored for value in row.values())
    rules = report["input_rules"]
    assert rules["rows_from_provider:AWS"] == 7 and rules["rows_from_provider:Oracle"] == 5
    assert rules["rows_with_synthetic_resource_id"] == 4 and rules["rows_with_tag_key_collisions"] == 1
    assert rules["timestamps_without_zone_read_as_utc"] == 12  # six Azure rows, start and end
    assert rules["rows_with_negative_billed_cost"] == 5 and rules["values_NULL_read_as_empty"] > 50
    assert "x_UsageType" in report["dropped_columns"] and "ContractedCost" in report["dropped_columns"]
    assert "columns left out:" in printed and "input rules applied:" in printed


def test_focus_credits_commitments_and_untagged_resources_arrive_as_documented(emulator, tmp_path):
    code, _, _ = run_cli(["--input", FOCUS_CSV, "--input_format", "focus", "--connection_id", "focus"]
                         + _common(emulator, tmp_path))
    assert code == 0
    stored = emulator.rows("focus", "2024-08") + emulator.rows("focus", "2024-09")
    by_description = {row.get("lineitem/description"): row for row in stored}
    plan = by_description["1 year No Upfront Compute Savings Plan"]
    assert plan["lineitem/type"] == "CommittedUseRecurringFee"
    assert plan["resource/id"] == "focus-charge:AWS Savings Plans@111122223333"
    assert plan["resource/tag:user:team"] == "finops" and plan["cost/amortized_cost"] == "0"
    reservation = by_description["Reserved VM Instance, Standard_D4_v5, EU West, 1 Year"]
    assert reservation["lineitem/type"] == "CommittedUsePurchase"
    assert reservation["resource/id"] == ("focus-charge:Virtual Machines@"
                                          "subscriptions_00000000-0000-0000-0000-0000000000aa")
    assert by_description["AWS Activate credits"]["lineitem/type"] == "Credit"
    assert by_description["AWS Activate credits"]["cost/cost"] == "-12.5"
    assert "resource/id" not in by_description["AWS Activate credits"]  # no tags: no id needed
    vacancy = [r for r in stored if r.get("lineitem/type") == "CommittedUseVacancy"]
    assert len(vacancy) == 1 and vacancy[0]["cost/amortized_cost"] == "0.12"
    collided = [r for r in stored if r.get("resource/id") == "example-logs-bucket"][0]
    assert collided["resource/tag:user:Cost_Center"] == "Data-Platform"  # the key already valid wins
    assert collided["cost/cost"] == "0.0000012345" and collided["time/usage_start"] == "2024-08-31T23:00:00Z"
    azure = [r for r in stored if r.get("resource/tag:environment")][0]
    assert azure["time/usage_start"] == "2024-08-18T22:00:00Z"
    correction = [r for r in stored if r["cost/cost"] == "-0.0416"][0]
    assert correction["lineitem/type"] == "Usage" and correction["time/usage_start"].startswith("2024-09")


def _focus_table(rows, tags_as="map", shuffle_seed=7):
    """The fixture's rows as typed FOCUS Parquet: timestamps typed, EffectiveCost a double,
    ProviderName dictionary-encoded, Tags a map (or struct), a bool x_ column, columns shuffled."""
    def text(name):
        return [None if r[name] in ("NULL", "") else r[name] for r in rows]

    columns = {name: pa.array(text(name), pa.string()) for name in rows[0]}
    for name in ("ChargePeriodStart", "ChargePeriodEnd", "BillingPeriodStart", "BillingPeriodEnd"):
        columns[name] = pa.array([_utc(v) if v else None for v in text(name)], pa.timestamp("us", tz="UTC"))
    columns["EffectiveCost"] = pa.array([float(v) if v else None for v in text("EffectiveCost")], pa.float64())
    columns["ProviderName"] = columns["ProviderName"].dictionary_encode()
    tags = [json.loads(v, parse_int=str) if v else None for v in text("Tags")]
    tags = [None if t is None else {k: str(v) for k, v in t.items()} for t in tags]
    if tags_as == "map":
        columns["Tags"] = pa.array([None if t is None else list(t.items()) for t in tags],
                                   pa.map_(pa.string(), pa.string()))
    else:
        keys = sorted({k for t in tags if t for k in t})
        columns["Tags"] = pa.array(tags, pa.struct([(k, pa.string()) for k in keys]))
    columns["x_IsFree"] = pa.array([r["BilledCost"] == "0" for r in rows])
    columns["x_Labels"] = pa.array([["a", "b"]] * len(rows))
    names = list(columns)
    random.Random(shuffle_seed).shuffle(names)
    return pa.table({name: columns[name] for name in names})


@pytest.mark.parametrize("tags_as", ["map", "struct"])
def test_focus_parquet_gives_byte_identical_bodies_to_the_csv(emulator, tmp_path, tags_as):
    rows = _focus_rows()
    parquet = tmp_path / "in" / "focus.parquet"
    parquet.parent.mkdir()
    pq.write_table(_focus_table(rows, tags_as), parquet, row_group_size=5)
    gz = tmp_path / "in" / "focus.csv.gz"
    gz.write_bytes(gzip.compress(open(FOCUS_CSV, "rb").read()))
    from_csv, csv_report = _dry_run(emulator, tmp_path, FOCUS_CSV, "csv")
    from_gzip, _ = _dry_run(emulator, tmp_path, gz, "gzip")
    from_parquet, parquet_report = _dry_run(emulator, tmp_path, parquet, "parquet")
    assert len(from_csv) == 2 and from_csv == from_gzip == from_parquet
    assert parquet_report["rows_read"] == 18 and parquet_report["rows_rejected"] == 0
    assert "x_IsFree" in parquet_report["dropped_columns"]
    assert parquet_report["input_rules"]["rows_with_tag_key_collisions"] == 1
    assert emulator.post_count == 0


def test_focus_rows_in_another_currency_are_rejected_with_that_reason(emulator, tmp_path):
    rows = _focus_rows()
    rows[0]["BillingCurrency"] = "EUR"
    path = write_csv(str(tmp_path / "in" / "eur.csv"), list(rows[0]), [list(r.values()) for r in rows])
    code, report, _ = run_cli(["--input", path, "--input_format", "focus", "--connection_id", "focus"]
                              + _common(emulator, tmp_path))
    assert code == 1 and emulator.post_count == 0 and report["rows_rejected"] == 1
    [dead] = read_dead_letters(report)
    assert dead["row"] == 1 and "BillingCurrency is EUR, not USD (--currency)" in dead["reason"]
    assert dead["values"]["BilledCost"] == "0.0416" and dead["values"]["ProviderName"] == "AWS"  # FOCUS names
    code, report, _ = run_cli(["--input", path, "--input_format", "focus", "--connection_id", "focus",
                               "--currency", "eur"] + _common(emulator, tmp_path, "eur"))
    assert code == 1 and report["rows_rejected"] == 17  # every USD row, this time
    code, report, _ = run_cli(["--input", path, "--input_format", "focus", "--connection_id", "focus",
                               "--max_rejected_rows", "1"] + _common(emulator, tmp_path, "limit"))
    assert code == 0 and _stored(emulator, "focus") == _billed_per_month(rows[1:])


def test_a_cbf_run_on_a_focus_file_says_to_add_input_format_focus(emulator, tmp_path, capsys):
    code, report, printed = run_cli(["--input", FOCUS_CSV, "--connection_id", "c"] + _common(emulator, tmp_path),
                                    capsys)
    assert code == 3 and report is None and emulator.post_count == 0
    assert "looks like a FOCUS export" in printed and "add --input_format focus" in printed
    code, _, printed = run_cli(["--input", FOCUS_CSV, "--connection_id", "c", "--unknown_columns", "drop"]
                               + _common(emulator, tmp_path), capsys)
    assert code == 3 and "add --input_format focus" in printed


def test_focus_robust_to_unseen_layouts(emulator, tmp_path):
    """Only the required columns plus a few, in any order; FOCUS 1.2 and 1.3 columns; x_ columns;
    lower-case category; minutes-only and offset timestamps; a Tags column of NULLs."""
    header = ["x_Whatever", "BilledCost", "ServiceProviderName", "InvoiceId", "ChargePeriodStart", "chargecategory",
              "ChargeCategory", "Tags", "BillingCurrency"]
    rows = [["1", "10.25", "Example Cloud", "INV-1", "2024-10-31T23:30Z", "x", "usage", "NULL", "usd"],
            ["2", "-3", "Example Cloud", "INV-1", "2024-11-01T00:30:00+01:00", "x", "Credit", "NULL", "USD"],
            ["3", "0.5", "NULL", "NULL", "2024-11-02", "x", "NULL", "NULL", "NULL"]]
    path = write_csv(str(tmp_path / "in" / "f.csv"), header, rows)
    code, report, _ = run_cli(["--input", path, "--input_format", "focus", "--connection_id", "f"]
                              + _common(emulator, tmp_path))
    assert code == 0 and report["rows_rejected"] == 0
    assert _stored(emulator, "f") == {"2024-10": (2, Decimal("7.25")), "2024-11": (1, Decimal("0.5"))}
    october = emulator.rows("f", "2024-10")
    assert october[0] == {"time/usage_start": "2024-10-31T23:30:00Z", "lineitem/type": "Usage",
                          "lineitem/cloud_provider": "Example Cloud", "cost/cost": "10.25", "bill/invoice_id": "INV-1"}
    assert october[1]["time/usage_start"] == "2024-10-31T23:30:00Z" and october[1]["lineitem/type"] == "Credit"
    assert emulator.rows("f", "2024-11")[0] == {"time/usage_start": "2024-11-02T00:00:00Z", "cost/cost": "0.5"}
    assert report["input_rules"]["rows_without_charge_category"] == 1
    assert sorted(report["dropped_columns"]) == ["chargecategory", "x_Whatever"]


def test_focus_unknown_charge_category_is_rejected_and_named(emulator, tmp_path):
    path = write_csv(str(tmp_path / "in" / "f.csv"), ["ChargePeriodStart", "BilledCost", "ChargeCategory"],
                     [["2024-10-01T00:00:00Z", "1", "Refund"], ["2024-10-01T00:00:00Z", "2", "Usage"]])
    code, report, _ = run_cli(["--input", path, "--input_format", "focus", "--connection_id", "f"]
                              + _common(emulator, tmp_path))
    assert code == 1 and emulator.post_count == 0
    [dead] = read_dead_letters(report)
    assert dead["row"] == 1 and "ChargeCategory 'Refund' is not a FOCUS charge category" in dead["reason"]


def test_focus_missing_required_column_stops_at_planning(emulator, tmp_path, capsys):
    path = write_csv(str(tmp_path / "in" / "f.csv"), ["ChargePeriodStart", "EffectiveCost"],
                     [["2024-10-01T00:00:00Z", "1"]])
    code, _, printed = run_cli(["--input", path, "--input_format", "focus", "--connection_id", "f"]
                               + _common(emulator, tmp_path), capsys)
    assert code == 3 and "has no 'BilledCost' column, which FOCUS requires" in printed and path in printed


def test_focus_tag_keys_refuse_rejects_the_rows_with_a_bad_key(emulator, tmp_path):
    code, report, _ = run_cli(["--input", FOCUS_CSV, "--input_format", "focus", "--connection_id", "focus",
                               "--tag_keys", "refuse", "--max_rejected_rows", "100"] + _common(emulator, tmp_path))
    assert code == 0
    dead = read_dead_letters(report)
    rows = _focus_rows()
    bad = [i + 1 for i, r in enumerate(rows) if r["Tags"] not in ("NULL", "")
           and any(not TAG_KEY.fullmatch(k) for k in json.loads(r["Tags"]))]
    assert sorted(d["row"] for d in dead) == bad and len(bad) == 10
    assert all("--tag_keys sanitize" in d["reason"] for d in dead)
    assert sum(entry[0] for entry in _stored(emulator, "focus").values()) == len(rows) - len(bad)


# ----- --column_map --------------------------------------------------------------------------

def _write_map(tmp_path, mapping, name="map.json"):
    path = tmp_path / name
    path.write_text(json.dumps(mapping))
    return str(path)


def test_column_map_renames_before_validation(emulator, tmp_path):
    path = write_csv(str(tmp_path / "in" / "x.csv"), ["usage_date", "amount", "resource/id", "Team"],
                     [["2024-08-01T00:00:00Z", "1.5", "r1", "web"], ["2024-08-02T00:00:00Z", "2", "r2", "db"]])
    mapping = _write_map(tmp_path, {"usage_date": "time/usage_start", "amount": "cost/cost", "Team": "resource/tag:team"})
    code, report, _ = run_cli(["--input", path, "--connection_id", "c", "--column_map", mapping]
                              + _common(emulator, tmp_path))
    assert code == 0
    assert emulator.rows("c", "2024-08") == [
        {"time/usage_start": "2024-08-01T00:00:00Z", "resource/id": "r1", "cost/cost": "1.5", "resource/tag:team": "web"},
        {"time/usage_start": "2024-08-02T00:00:00Z", "resource/id": "r2", "cost/cost": "2", "resource/tag:team": "db"}]


@pytest.mark.parametrize("mapping, message", [
    ({"usage_date": "time/usage_start", "amount": "cost/cost", "missing": "lineitem/id"},
     "--column_map names column 'missing', which the file does not have"),
    ({"usage_date": "time/usage_start", "amount": "cost/cost", "resource/id": "cost/cost"},
     "'amount', 'resource/id' to the same column 'cost/cost'"),
    ({"usage_date": "time/usage_start", "amount": "resource/id"}, "would all become 'resource/id'"),
    ({"usage_date": "time/usage_start", "amount": "costs"}, "column 'costs' is not a Common Bill Format column"),
])
def test_column_map_errors_stop_at_planning(emulator, tmp_path, capsys, mapping, message):
    path = write_csv(str(tmp_path / "in" / "x.csv"), ["usage_date", "amount", "resource/id"],
                     [["2024-08-01T00:00:00Z", "1.5", "r1"]])
    code, report, printed = run_cli(["--input", path, "--connection_id", "c", "--column_map",
                                     _write_map(tmp_path, mapping)] + _common(emulator, tmp_path), capsys)
    assert code == 3 and report is None and emulator.post_count == 0
    assert message in printed


def test_column_map_that_is_not_json_stops_at_planning(emulator, tmp_path, capsys):
    bad = tmp_path / "map.json"
    bad.write_text("usage_date=time/usage_start")
    code, _, printed = run_cli(["--input", FOCUS_CSV, "--connection_id", "c", "--column_map", str(bad)]
                               + _common(emulator, tmp_path), capsys)
    assert code == 3 and "is not valid JSON" in printed and str(bad) in printed


def test_column_map_feeds_a_focus_export_with_other_names(emulator, tmp_path):
    path = write_csv(str(tmp_path / "in" / "f.csv"), ["start", "billed", "x_Project"],
                     [["2024-10-01T00:00:00Z", "1", "atlas"]])
    mapping = _write_map(tmp_path, {"start": "ChargePeriodStart", "billed": "BilledCost",
                                    "x_Project": "resource/usage_family"})
    code, _, _ = run_cli(["--input", path, "--input_format", "focus", "--connection_id", "f",
                          "--column_map", mapping] + _common(emulator, tmp_path))
    assert code == 0
    assert emulator.rows("f", "2024-10") == [{"time/usage_start": "2024-10-01T00:00:00Z",
                                              "resource/usage_family": "atlas", "cost/cost": "1"}]


# ----- CBF quirks: default and switch ---------------------------------------------------------

def test_unknown_columns_refuse_by_default_and_drop_on_request(emulator, tmp_path, capsys):
    path = write_csv(str(tmp_path / "in" / "x.csv"), ["time/usage_start", "cost/cost", "notes"],
                     [["2024-08-01T00:00:00Z", "1", "checked by Ann"]])
    code, _, printed = run_cli(["--input", path, "--connection_id", "c"] + _common(emulator, tmp_path), capsys)
    assert code == 3 and "'notes'" in printed and "--unknown_columns drop" in printed and path in printed
    code, report, printed = run_cli(["--input", path, "--connection_id", "c", "--unknown_columns", "drop"]
                                    + _common(emulator, tmp_path), capsys)
    assert code == 0, printed
    assert emulator.rows("c", "2024-08") == [{"time/usage_start": "2024-08-01T00:00:00Z", "cost/cost": "1"}]
    assert report["dropped_columns"] == ["notes"] and "columns left out: notes" in printed


def _tagged_csv(tmp_path):
    return write_csv(str(tmp_path / "in" / "tags.csv"),
                     ["time/usage_start", "cost/cost", "resource/id", "resource/tag:Cost Center",
                      "resource/tag:Cost_Center", "resource/tag:équipe", "resource/tag: env"],
                     [["2024-08-01T00:00:00Z", "1", "r1", "Sales", "Finance", "web", "prod"],
                      ["2024-08-01T00:00:00Z", "2", "r2", "Sales", "", "", ""]])


def test_tag_keys_refuse_by_default_and_sanitize_on_request(emulator, tmp_path, capsys):
    path = _tagged_csv(tmp_path)
    code, _, printed = run_cli(["--input", path, "--connection_id", "c"] + _common(emulator, tmp_path), capsys)
    assert code == 3 and "'resource/tag:Cost Center'" in printed and "--tag_keys sanitize" in printed
    code, report, printed = run_cli(["--input", path, "--connection_id", "c", "--tag_keys", "sanitize"]
                                    + _common(emulator, tmp_path), capsys)
    assert code == 0, printed
    assert emulator.rows("c", "2024-08") == [
        {"time/usage_start": "2024-08-01T00:00:00Z", "resource/id": "r1", "cost/cost": "1",
         "resource/tag:Cost_Center": "Finance", "resource/tag:_quipe": "web", "resource/tag:env": "prod"},
        {"time/usage_start": "2024-08-01T00:00:00Z", "resource/id": "r2", "cost/cost": "2",
         "resource/tag:Cost_Center": "Sales"}]
    assert report["input_rules"] == {"rows_with_sanitised_tag_keys": 2, "rows_with_tag_key_collisions": 1}


def test_date_only_reads_as_midnight_utc_in_csv_as_in_parquet(emulator, tmp_path):
    path = write_csv(str(tmp_path / "in" / "d.csv"), ["time/usage_start", "time/usage_end", "cost/cost"],
                     [["2024-09-01", "2024-09-02", "1.5"], ["2024-08-31", "2024-09-01", "2"]])
    pq.write_table(pa.table({"time/usage_start": pa.array([dt.date(2024, 9, 1), dt.date(2024, 8, 31)], pa.date32()),
                             "time/usage_end": pa.array([dt.date(2024, 9, 2), dt.date(2024, 9, 1)], pa.date32()),
                             "cost/cost": ["1.5", "2"]}), tmp_path / "in" / "d.parquet")
    code, _, _ = run_cli(["--input", path, "--connection_id", "csv"] + _common(emulator, tmp_path))
    assert code == 0
    code, _, _ = run_cli(["--input", str(tmp_path / "in" / "d.parquet"), "--connection_id", "parquet"]
                         + _common(emulator, tmp_path, "parquet"))
    assert code == 0
    for month in ("2024-08", "2024-09"):
        assert emulator.rows("csv", month) == emulator.rows("parquet", month)
    assert emulator.rows("csv", "2024-09") == [{"time/usage_start": "2024-09-01T00:00:00Z",
                                                "time/usage_end": "2024-09-02T00:00:00Z", "cost/cost": "1.5"}]


@pytest.mark.parametrize("delimiter, flag, hint, suggested", [(";", ";", "';'", "';'"), ("\t", "tab", "a tab", "tab")])
def test_csv_delimiter_default_says_what_the_header_looks_like_and_the_switch_reads_it(
        emulator, tmp_path, capsys, delimiter, flag, hint, suggested):
    path = tmp_path / "in" / "semi.csv"
    path.parent.mkdir()
    path.write_text(delimiter.join(["time/usage_start", "cost/cost", "lineitem/description"]) + "\n"
                    + delimiter.join(["2024-08-01T00:00:00Z", "1,5E+0", '"a, b"']) + "\n")
    code, _, printed = run_cli(["--input", str(path), "--connection_id", "c"] + _common(emulator, tmp_path), capsys)
    assert code == 3 and f"holding {hint}" in printed and f"give --csv_delimiter {suggested}" in printed
    assert str(path) in printed
    code, report, printed = run_cli(["--input", str(path), "--connection_id", "c", "--csv_delimiter", flag,
                                     "--max_rejected_rows", "1"] + _common(emulator, tmp_path), capsys)
    assert code == 0, printed
    # `1,5E+0` is not a number (a comma is no decimal point here): rejected, not misread.
    assert report["rows_rejected"] == 1 and "cost/cost" in read_dead_letters(report)[0]["reason"]
    path.write_text(delimiter.join(["time/usage_start", "cost/cost", "lineitem/description"]) + "\n"
                    + delimiter.join(["2024-08-01T00:00:00Z", "1.5", '"a, b"']) + "\n")
    code, _, _ = run_cli(["--input", str(path), "--connection_id", "c", "--csv_delimiter", flag]
                         + _common(emulator, tmp_path, "ok"))
    assert code == 0
    assert emulator.rows("c", "2024-08") == [{"time/usage_start": "2024-08-01T00:00:00Z",
                                              "lineitem/description": "a, b", "cost/cost": "1.5"}]


@pytest.mark.parametrize("name", ["empty.csv", "empty.csv.gz", "empty.parquet"])
def test_a_zero_byte_file_is_a_warning_naming_it(emulator, tmp_path, capsys, name):
    good = write_csv(str(tmp_path / "in" / "good.csv"), ["time/usage_start", "cost/cost"],
                     [["2024-08-01T00:00:00Z", "1"]])
    empty = tmp_path / "in" / name
    empty.write_bytes(b"")
    code, report, printed = run_cli(["--input", str(tmp_path / "in" / "*")] + ["--connection_id", "c"]
                                    + _common(emulator, tmp_path), capsys)
    assert code == 0, printed
    assert report["warnings"] == [f"{empty}: the file is empty (0 bytes), usually a broken export; it holds no rows"]
    assert f"warning: {empty}: the file is empty" in printed
    assert _stored(emulator, "c") == {"2024-08": (1, Decimal(1))} and os.path.exists(good)


def test_a_zero_byte_file_alone_warns_and_sends_nothing(emulator, tmp_path, capsys):
    empty = tmp_path / "in" / "empty.csv"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    code, report, printed = run_cli(["--input", str(empty), "--connection_id", "c"] + _common(emulator, tmp_path),
                                    capsys)
    assert code == 0 and report["rows_read"] == 0 and emulator.post_count == 0
    assert str(empty) in report["warnings"][0] and "the input holds no rows" in printed


def test_fixture_generator_reproduces_the_committed_csv(tmp_path):
    """The committed FOCUS fixture is exactly what its documented generator writes."""
    script = os.path.join(os.path.dirname(FOCUS_CSV), "make_focus_export.py")
    copy = tmp_path / "make_focus_export.py"
    shutil.copy(script, copy)
    import runpy
    runpy.run_path(str(copy), run_name="__main__")
    assert (tmp_path / "focus-1.0-mixed.csv").read_bytes() == open(FOCUS_CSV, "rb").read()
