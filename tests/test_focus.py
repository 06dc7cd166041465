"""anycost.inputs.focus, anycost.inputs.tags and anycost.inputs.sources: the pure FOCUS mapping and input rules."""
import datetime as dt
import json
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from anycost import cbf
from anycost.inputs import focus, normalise, sources, tags, typed_text
from anycost.config import RowSettings


def _batch(**columns):
    return pa.RecordBatch.from_pydict({k: pa.array(v, pa.string()) if isinstance(v, list) else v
                                       for k, v in columns.items()})


def _rows(result):
    return [{k: v for k, v in row.items() if v is not None} for row in result.batch.to_pylist()]


BASE = {"ChargePeriodStart": ["2024-09-01T00:00:00Z"], "BilledCost": ["1"]}


# ----- the mapping -----------------------------------------------------------------------------

def test_every_mapped_column_lands_in_its_cbf_column():
    values = {focus_name: [f"v-{focus_name}"] for focus_name, _ in focus.MAPPING}
    result = focus.to_cbf(_batch(**values))
    [row] = _rows(result)
    assert row == {cbf_name: f"v-{focus_name}" for focus_name, cbf_name in focus.MAPPING}
    assert set(row) <= set(cbf.STANDARD_COLUMNS)


def test_columns_without_a_cbf_home_are_dropped_and_listed():
    result = focus.to_cbf(_batch(**BASE, ContractedCost=["0.9"], x_UsageType=["Box"], BillingAccountId=["1"]))
    assert set(result.batch.schema.names) == {cbf.USAGE_START, cbf.COST}
    assert result.dropped_columns == ("ContractedCost", "x_UsageType", "BillingAccountId")


@pytest.mark.parametrize("category, frequency, commitment, status, expected", [
    ("Usage", "Usage-Based", None, None, "Usage"),
    ("usage", None, None, None, "Usage"),
    (" USAGE ", None, None, None, "Usage"),
    ("Usage", "Usage-Based", "ri-1", "Used", "Usage"),
    ("Usage", "Usage-Based", "ri-1", "Unused", "CommittedUseVacancy"),
    ("Purchase", "One-Time", "ri-1", None, "CommittedUsePurchase"),
    ("Purchase", "Recurring", "sp-1", None, "CommittedUseRecurringFee"),
    ("Purchase", "Recurring", None, None, "Purchase"),
    ("Tax", "One-Time", None, None, "Tax"),
    ("Credit", "One-Time", None, None, "Credit"),
    ("Adjustment", "One-Time", None, None, "Adjustment"),
])
def test_charge_category_to_lineitem_type(category, frequency, commitment, status, expected):
    result = focus.to_cbf(_batch(**BASE, ChargeCategory=[category], ChargeFrequency=[frequency],
                                 CommitmentDiscountId=[commitment], CommitmentDiscountStatus=[status]))
    assert _rows(result)[0][cbf.LINEITEM_TYPE] == expected and expected in cbf.LINEITEM_TYPES
    assert not result.refused.any()


def test_negative_usage_and_corrections_keep_their_category():
    result = focus.to_cbf(_batch(ChargePeriodStart=["2024-09-01T00:00:00Z"] * 2, BilledCost=["-1", "-2"],
                                 ChargeCategory=["Usage", "Usage"], ChargeClass=["Correction", "NULL"]))
    assert [r[cbf.LINEITEM_TYPE] for r in _rows(result)] == ["Usage", "Usage"]
    assert result.counts[focus.CORRECTIONS] == 1 and result.counts[focus.NEGATIVE] == 2


def test_unknown_category_refuses_the_row_and_empty_is_left_to_cbf():
    result = focus.to_cbf(_batch(ChargePeriodStart=["t"] * 3, BilledCost=["1"] * 3,
                                 ChargeCategory=["Refund", "NULL", "Usage"]))
    assert result.refused.tolist() == [True, False, False]
    assert result.reasons[0].startswith("ChargeCategory 'Refund' is not a FOCUS charge category")
    assert cbf.LINEITEM_TYPE not in _rows(result)[1] and result.counts[focus.NO_CATEGORY] == 1
    assert result.kept().num_rows == 2


def test_null_text_and_empty_values_are_absent_and_counted():
    result = focus.to_cbf(_batch(**BASE, ResourceId=["NULL"], ServiceName=[""], RegionId=["null"]))
    assert _rows(result)[0] == {cbf.USAGE_START: "2024-09-01T00:00:00Z", cbf.COST: "1", "resource/region": "null"}
    assert result.counts[focus.NULL_TEXT] == 1


def test_other_currencies_are_refused_and_a_missing_one_is_counted():
    result = focus.to_cbf(_batch(ChargePeriodStart=["t"] * 4, BilledCost=["1"] * 4,
                                 BillingCurrency=["USD", "eur", "NULL", " usd "]), currency="USD")
    assert result.refused.tolist() == [False, True, False, False]
    assert result.reasons[1] == ("BillingCurrency is eur, not USD (--currency): CBF has no currency column, "
                                 "so this row cannot be sent with the run's other rows")
    assert result.counts[focus.NO_CURRENCY] == 1
    assert focus.to_cbf(_batch(**BASE, BillingCurrency=["EUR"]), currency="EUR").refused.tolist() == [False]


def test_timestamp_spellings_are_counted_and_minutes_get_seconds():
    result = focus.to_cbf(_batch(ChargePeriodStart=["2024-09-18 22:00:00", "2024-09-18T22:00Z", "2024-09-18T22:00:00Z"],
                                 ChargePeriodEnd=["2024-09-18 23:00", "NULL", "2024-09-18"], BilledCost=["1"] * 3))
    rows = _rows(result)
    assert [r[cbf.USAGE_START] for r in rows] == ["2024-09-18 22:00:00", "2024-09-18T22:00:00Z", "2024-09-18T22:00:00Z"]
    assert rows[0][cbf.USAGE_END] == "2024-09-18 23:00:00"
    assert result.counts[focus.NO_SECONDS] == 2 and result.counts[focus.NAIVE_TIMES] == 3


def test_typed_columns_keep_their_exact_text_and_kind():
    batch = pa.RecordBatch.from_pydict({
        "ChargePeriodStart": pa.array([dt.datetime(2024, 9, 1, 5, tzinfo=dt.timezone.utc)], pa.timestamp("us", "UTC")),
        "BilledCost": pa.array([Decimal("0.0000012300")], pa.decimal128(20, 10)),
        "EffectiveCost": pa.array([1.25e-05], pa.float64()),
        "ProviderName": pa.array(["AWS"]).dictionary_encode(),
    })
    result = focus.to_cbf(batch)
    assert _rows(result) == [{cbf.USAGE_START: "2024-09-01T05:00:00Z", cbf.COST: "0.0000012300",
                              "cost/amortized_cost": "0.0000125", "lineitem/cloud_provider": "AWS"}]
    kinds = {f.name: (f.metadata or {}).get(typed_text.KIND_KEY) for f in result.batch.schema}
    assert kinds[cbf.COST] == typed_text.NUMBER and kinds[cbf.USAGE_START] == typed_text.TIMESTAMP


def test_service_provider_name_stands_in_for_provider_name():
    result = focus.to_cbf(_batch(ChargePeriodStart=["t"] * 2, BilledCost=["1"] * 2, ProviderName=["AWS", "NULL"],
                                 ServiceProviderName=["X", "Y"]))
    assert [r["lineitem/cloud_provider"] for r in _rows(result)] == ["AWS", "Y"]
    assert result.counts["rows_from_provider:AWS"] == 1 and result.counts["rows_from_provider:Y"] == 1


def test_looks_like_focus():
    assert focus.looks_like_focus(["ChargePeriodStart", "BilledCost", "x"])
    assert not focus.looks_like_focus(["time/usage_start", "cost/cost", "BilledCost"])


# ----- tags ----------------------------------------------------------------------------------

def _tags_json(*objects):
    return [json.dumps(o) if isinstance(o, dict) else o for o in objects]


def test_tags_become_sanitised_tag_columns_with_a_synthetic_id_where_needed():
    result = focus.to_cbf(_batch(
        ChargePeriodStart=["t"] * 4, BilledCost=["1"] * 4,
        ResourceId=["r1", "NULL", "", "r4"], ServiceName=["Support", "Virtual Machines", None, None],
        SubAccountId=["a", "/subscriptions/s:1", None, None],
        Tags=_tags_json({" Cost Center": "x", "ok": "y"}, {"team": "web"}, {"team": "db"}, "NULL")))
    rows = _rows(result)
    assert rows[0] == {cbf.USAGE_START: "t", cbf.COST: "1", cbf.RESOURCE_ID: "r1", "resource/service": "Support",
                       "resource/account": "a", "resource/tag:Cost_Center": "x", "resource/tag:ok": "y"}
    assert rows[1][cbf.RESOURCE_ID] == "focus-charge:Virtual Machines@subscriptions_s_1"
    assert rows[2][cbf.RESOURCE_ID] == "focus-charge:unknown@unknown"
    assert rows[3] == {cbf.USAGE_START: "t", cbf.COST: "1", cbf.RESOURCE_ID: "r4"}  # no tags: nothing changes
    assert result.counts[focus.SYNTHETIC_IDS] == 2 and result.counts[tags.SANITISED] == 1


def test_colliding_keys_keep_the_already_valid_key_then_code_point_order():
    assert sorted(["Cost Center", "Cost_Center", " Cost_Center"], key=cbf.tag_key_priority) == [
        "Cost_Center", " Cost_Center", "Cost Center"]
    result = focus.to_cbf(_batch(
        ChargePeriodStart=["t"] * 3, BilledCost=["1"] * 3, ResourceId=["r"] * 3,
        Tags=_tags_json({"Cost Center": "a", "Cost_Center": "b"}, {"Cost Center": "a", "Cost/Center": "c"},
                        {"Cost Center": "a", "Cost_Center": ""})))
    assert [r["resource/tag:Cost_Center"] for r in _rows(result)] == ["b", "a", "a"]
    assert result.counts[tags.COLLISIONS] == 1  # row 2: Cost/Center is valid, a different key


def test_unreadable_tags_keep_the_row_and_are_counted():
    result = focus.to_cbf(_batch(ChargePeriodStart=["t"] * 3, BilledCost=["1"] * 3, ResourceId=["r"] * 3,
                                 Tags=["{not json", "[1, 2]", '{"a": 1.50, "b": true, "c": null, "d": {"e": 1}}']))
    rows = _rows(result)
    assert not result.refused.any() and rows[0] == rows[1] == {cbf.USAGE_START: "t", cbf.COST: "1",
                                                               cbf.RESOURCE_ID: "r"}
    assert {k: v for k, v in rows[2].items() if k.startswith("resource/tag:")} == {
        "resource/tag:a": "1.50", "resource/tag:b": "true", "resource/tag:d": '{"e":"1"}'}
    assert result.counts[tags.UNREADABLE] == 2


def test_tags_without_braces_read_as_an_object():
    result = focus.to_cbf(_batch(**BASE, ResourceId=["r"], Tags=['"env": "prod","team": "web"']))
    assert {k: v for k, v in _rows(result)[0].items() if k.startswith("resource/tag:")} == {
        "resource/tag:env": "prod", "resource/tag:team": "web"}
    assert tags.UNREADABLE not in result.counts


def test_empty_keys_are_dropped_and_counted():
    result = focus.to_cbf(_batch(**BASE, ResourceId=["r"], Tags=_tags_json({"  ": "x", "k": "v"})))
    assert {k for k in _rows(result)[0] if k.startswith("resource/tag:")} == {"resource/tag:k"}
    assert result.counts[tags.EMPTY_KEYS] == 1


def test_tag_keys_refuse_refuses_rows_with_a_bad_key_only():
    result = focus.to_cbf(_batch(ChargePeriodStart=["t"] * 3, BilledCost=["1"] * 3, ResourceId=["r"] * 3,
                                 Tags=_tags_json({"Cost Center": "x"}, {"ok": "y"}, {"Cost Center": ""})),
                          tag_keys="refuse")
    assert result.refused.tolist() == [True, False, False]
    assert "tag key 'Cost Center'" in result.reasons[0] and "--tag_keys sanitize" in result.reasons[0]


MAP = pa.map_(pa.string(), pa.string())


@pytest.mark.parametrize("make", [
    lambda objs: pa.array([json.dumps(o) if o is not None else None for o in objs]),
    lambda objs: pa.array([list(o.items()) if o is not None else None for o in objs], MAP),
    lambda objs: pa.array([list(o.items()) if o is not None else None for o in objs], MAP).slice(0),
    lambda objs: pa.array([[{"key": k, "value": v} for k, v in o.items()] if o is not None else None for o in objs],
                          pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())]))),
    lambda objs: pa.array(objs, pa.struct([("Cost Center", pa.string()), ("Cost_Center", pa.string()),
                                           ("env", pa.string())])),
])
def test_json_map_key_value_list_and_struct_tags_agree(make):
    objs = [{"Cost Center": "a", "Cost_Center": "b"}, None, {"env": "prod"}, {"Cost Center": "c"}]
    if "struct<Cost" in str(make(objs).type):  # a struct has every field on every row
        objs = [{"Cost Center": o.get("Cost Center"), "Cost_Center": o.get("Cost_Center"), "env": o.get("env")}
                if o is not None else None for o in objs]
    batch = pa.RecordBatch.from_arrays(
        [pa.array(["t"] * 4), pa.array(["1"] * 4), pa.array(["r"] * 4), make(objs)],
        names=["ChargePeriodStart", "BilledCost", "ResourceId", "Tags"])
    result = focus.to_cbf(batch)
    assert [{k: v for k, v in r.items() if k.startswith("resource/tag:")} for r in _rows(result)] == [
        {"resource/tag:Cost_Center": "b"}, {}, {"resource/tag:env": "prod"}, {"resource/tag:Cost_Center": "c"}]
    assert result.counts[tags.COLLISIONS] == 1 and result.counts[tags.SANITISED] == 2


def test_sliced_map_column_reads_only_its_rows():
    column = pa.array([[("a", "1")], [("b", "2")], None, [("c", "3")]], MAP).slice(1, 3)
    unit_tags = tags.read_tags(column)
    assert {k: v.to_pylist() for k, v in unit_tags.columns.items()} == {"b": ["2", None, None],
                                                                        "c": [None, None, "3"]}


def test_a_refused_tags_type_is_named():
    assert "Tags must be JSON text" in tags.type_problem(pa.int64())
    assert tags.type_problem(MAP) is None and tags.type_problem(pa.string()) is None


def test_sanitize_tag_key():
    assert cbf.sanitize_tag_key(" Cost Center ") == "Cost_Center"
    assert cbf.sanitize_tag_key("équipe") == "_quipe"
    assert cbf.sanitize_tag_key("user:a.b/c=d+e-f@g_h") == "user:a.b/c=d+e-f@g_h"
    assert cbf.sanitize_tag_key("  ") == ""


# ----- sources: column plans and the column map -------------------------------------------------

CBF_SETTINGS = RowSettings(connection_id="c")


def test_plan_columns_cbf_refuses_unknown_and_suggests_drop():
    plan = sources.plan_columns(["time/usage_start", "cost/cost", "notes"], CBF_SETTINGS)
    assert plan.problems == ("column 'notes' is not a Common Bill Format column; "
                             "--unknown_columns drop leaves such columns out",)
    plan = sources.plan_columns(["time/usage_start", "cost/cost", "notes"],
                                RowSettings(unknown_columns="drop"))
    assert plan.problems == () and plan.dropped == ("notes",)


def test_plan_columns_sanitize_keeps_fixable_tags_and_drops_empty_keys():
    settings = RowSettings(tag_keys="sanitize")
    plan = sources.plan_columns(["time/usage_start", "cost/cost", "resource/tag:a b", "resource/tag: "], settings)
    assert plan.problems == () and list(plan.targets) == ["time/usage_start", "cost/cost", "resource/tag:a b"]
    assert plan.dropped == ("resource/tag: ",)


def test_plan_columns_focus_reads_only_what_it_maps():
    settings = RowSettings(input_format="focus", stream_column="conn")
    plan = sources.plan_columns(["BilledCost", "ChargePeriodStart", "x_A", "PricingUnit", "conn", "Tags"], settings)
    assert plan.problems == () and set(plan.targets) == {"BilledCost", "ChargePeriodStart", "conn", "Tags"}
    assert plan.dropped == ("x_A", "PricingUnit")
    plan = sources.plan_columns(["BilledCost", "ServiceName", "resource/service"], settings)
    assert any("has no 'ChargePeriodStart'" in p for p in plan.problems)
    assert any("'resource/service' would be filled twice" in p for p in plan.problems)


def test_parse_column_map():
    assert sources.parse_column_map('{"b": "cost/cost", "a": "time/usage_start"}') == (
        ("a", "time/usage_start"), ("b", "cost/cost"))
    for text, message in (("[1]", "must be a JSON object"), ('{"a": 1}', "must be a JSON object"),
                          ("{", "not valid JSON"), ('{"a": "x", "b": "x"}', "to the same column 'x'")):
        with pytest.raises(sources.ColumnMapError, match=message):
            sources.parse_column_map(text)


def test_prepare_drops_renames_and_counts():
    settings = RowSettings(connection_id="c", column_map=(("day", "time/usage_start"),),
                                  unknown_columns="drop", tag_keys="sanitize")
    batch = _batch(day=["2024-09-01"], **{"cost/cost": ["1"], "note": ["x"], "resource/id": ["r"],
                                         "resource/tag:a b": ["1"], "resource/tag:a_b": ["2"]})
    prepared = sources.prepare(batch, settings)
    assert prepared.batch.to_pylist() == [{"time/usage_start": "2024-09-01", "cost/cost": "1", "resource/id": "r",
                                           "resource/tag:a_b": "2"}]
    assert prepared.counts == {tags.SANITISED: 1, tags.COLLISIONS: 1}


def test_normalise_batch_puts_the_focus_row_as_it_was_in_the_dead_letter():
    settings = RowSettings(connection_id="c", input_format="focus", tag_keys="sanitize")
    batch = _batch(ChargePeriodStart=["2024-09-01T00:00:00Z", "soon", "2024-09-02T00:00:00Z"],
                   BilledCost=["1", "2", "3"], BillingCurrency=["USD", "USD", "GBP"], x_Note=["a", "b", "c"])
    source = normalise.SourceBatch("f.csv", (0,), np.array([1, 2, 3]))
    result, counts = sources.normalise_batch(batch, source, settings)
    assert result.rows_in == 3 and sum(chunk.row_count for _, chunk in result.chunks) == 1
    by_row = {r["row"]: r for r in result.rejects}
    assert by_row[2]["values"] == {"ChargePeriodStart": "soon", "BilledCost": "2", "BillingCurrency": "USD",
                                   "x_Note": "b"}
    assert by_row[2]["reason"].startswith("time/usage_start")
    assert by_row[3]["reason"].startswith("BillingCurrency is GBP") and by_row[3]["values"]["x_Note"] == "c"


def test_focus_keeps_the_stream_column_for_the_connection_id():
    settings = RowSettings(stream_column="x_Connection", input_format="focus", tag_keys="sanitize")
    batch = _batch(ChargePeriodStart=["2024-09-01T00:00:00Z", "2024-09-01T00:00:00Z"], BilledCost=["1", "2"],
                   x_Connection=["aws-prod", "oci"], x_Other=["a", "b"])
    source = normalise.SourceBatch("f.csv", (0,), np.array([1, 2]))
    result, _ = sources.normalise_batch(batch, source, settings)
    assert not result.rejects
    assert sorted(key for key, _ in result.chunks) == [("aws-prod", "2024-09"), ("oci", "2024-09")]
    assert all(b"x_Connection" not in chunk.json_rows() for _, chunk in result.chunks)
