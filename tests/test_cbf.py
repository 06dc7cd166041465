"""anycost.cbf: which columns exist, tag keys, column order, connection ids."""
import pytest
from hypothesis import given, settings, strategies as st

from anycost import cbf

DOCUMENTED = [
    "lineitem/id", "lineitem/type", "lineitem/description", "lineitem/cloud_provider",
    "time/usage_start", "time/usage_end", "resource/id", "resource/service", "resource/account",
    "resource/region", "resource/usage_family", "action/operation", "action/usage_type",
    "action/region", "action/account", "usage/amount", "usage/units", "cost/cost",
    "cost/discounted_cost", "cost/amortized_cost", "cost/discounted_amortized_cost",
    "cost/on_demand_cost", "bill/invoice_id", "k8s/cluster", "k8s/namespace", "k8s/deployment",
    "k8s/labels",
]


@pytest.mark.parametrize("name", DOCUMENTED)
def test_every_documented_column_is_accepted(name):
    assert cbf.column_problem(name) is None
    assert cbf.is_cbf_column(name)


def test_standard_columns_are_exactly_the_documented_ones():
    assert sorted(cbf.STANDARD_COLUMNS) == sorted(DOCUMENTED)


@pytest.mark.parametrize("name", [
    "resource/tag:env", "resource/tag:Env", "resource/tag:a_b.c:d/e=f+g-h@i", "resource/tag:123",
])
def test_valid_tag_columns(name):
    assert cbf.column_problem(name) is None


@pytest.mark.parametrize("name", [
    "resource/tag:", "resource/tag:my tag", "resource/tag:env!", "resource/tag:\tx", "resource/tag:a,b",
    "resource/tag:é", "resource/tag:a\"b", "resource/tag:x ",
])
def test_bad_tag_keys_are_named(name):
    problem = cbf.column_problem(name)
    assert problem is not None
    assert repr(name) in problem and "tag" in problem


@pytest.mark.parametrize("name, words", [
    ("cost", "not a Common Bill Format column"),
    ("Cost/Cost", "not a Common Bill Format column"),
    ("custom/column", "not a Common Bill Format column"),
    ("", "not a Common Bill Format column"),
    (" cost/cost", "leading or trailing whitespace"),
    ("cost/cost ", "leading or trailing whitespace"),
    ("resource/tags:env", "not a Common Bill Format column"),
])
def test_unknown_columns_are_named(name, words):
    problem = cbf.column_problem(name)
    assert problem is not None and words in problem and repr(name) in problem


def test_tag_keys_are_case_sensitive_and_distinct():
    assert cbf.is_cbf_column("resource/tag:Env") and cbf.is_cbf_column("resource/tag:env")
    order = cbf.canonical_column_order(["resource/tag:env", "resource/tag:Env"])
    assert order == ["resource/tag:Env", "resource/tag:env"]


def test_canonical_order_is_usage_start_then_documentation_order_then_sorted_tags():
    names = ["resource/tag:zeta", "cost/cost", "resource/tag:alpha", "lineitem/id", "time/usage_start",
             "k8s/labels", "resource/id"]
    assert cbf.canonical_column_order(names) == [
        "time/usage_start", "lineitem/id", "resource/id", "cost/cost", "k8s/labels",
        "resource/tag:alpha", "resource/tag:zeta"]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(DOCUMENTED + ["resource/tag:a", "resource/tag:b", "resource/tag:B"]),
                unique=True), st.randoms())
def test_canonical_order_ignores_input_order(names, rnd):
    shuffled = list(names)
    rnd.shuffle(shuffled)
    assert cbf.canonical_column_order(shuffled) == cbf.canonical_column_order(names)
    assert sorted(cbf.canonical_column_order(names)) == sorted(names)


@pytest.mark.parametrize("value", ["a", "abc-DEF_123", "-", "_", "x" * 128])
def test_connection_id_allowed(value):
    assert cbf.is_valid_connection_id(value)


@pytest.mark.parametrize("value", [
    "", "../x", "..", "a/b", "%2F", "a%2Fb", "a.b", "a b", "a\n", "x" * 129, "é", "a?b", "a#b", None, 12,
])
def test_connection_id_refused(value):
    assert not cbf.is_valid_connection_id(value)


def test_number_and_timestamp_columns():
    assert set(cbf.NUMBER_COLUMNS) == {c for c in DOCUMENTED if c.startswith("cost/")} | {"usage/amount"}
    assert set(cbf.TIMESTAMP_COLUMNS) == {"time/usage_start", "time/usage_end"}
    assert set(cbf.REQUIRED_COLUMNS) == {"time/usage_start", "cost/cost"}


def test_lineitem_types():
    assert cbf.LINEITEM_TYPES == {
        "Usage", "Tax", "Support", "Purchase", "CommittedUsePurchase", "Discount", "Credit", "Fee",
        "Adjustment", "CommittedUseVacancy", "CommittedUseRecurringFee"}


def test_limits():
    assert cbf.MAX_BODY_BYTES == 5_000_000
    assert cbf.MAX_ROWS_PER_STREAM_MONTH == 1_000_000
    assert cbf.MAX_BYTES_PER_STREAM_MONTH == 70_000_000


@pytest.mark.parametrize("name, meant", [
    (" cost/cost ", "cost/cost"), ("cost/cost ", "cost/cost"), ("Cost/Cost", "cost/cost"),
    ("TIME/USAGE_START", "time/usage_start"), ("resource/ids", "resource/id"), (" Resource/Id", "resource/id"),
    ("notes", None), ("cost", None), ("custom/column", None), ("cost/cost", None),
])
def test_a_near_miss_of_a_cbf_column_names_the_column_it_stands_for(name, meant):
    assert cbf.meant_column(name) == meant
    if meant:
        assert f"{meant!r}" in cbf.column_problem(name)


def test_spaces_around_a_required_column_say_to_trim_them():
    problem = cbf.column_problem(" cost/cost ")
    assert "spaces around the required CBF column name 'cost/cost'" in problem and "trim" in problem
    assert "did you mean 'cost/cost'?" in cbf.column_problem("Cost/Cost")
