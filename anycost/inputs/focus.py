"""FOCUS rows as Common Bill Format rows: the FinOps Foundation's FOCUS 1.0, 1.1 and 1.2.

`to_cbf` turns one Arrow record batch of FOCUS columns (text from CSV, or typed Parquet
columns, `Tags` as JSON text, a map or a struct) into a record batch of CBF text columns
with the same rows, plus each row's refusal reason (another currency, an unknown charge
category, a refused tag key) and counters of the rules applied, for the run report.
The mapping and every rule are documented in docs/data-rules.md ("FOCUS input"); the reasons live
next to `MAPPING` below. Columns CBF has no place for, provider `x_` columns included,
are dropped and listed. Everything per row is an Arrow kernel or a numpy gather; only
distinct values (Tags JSON, unknown categories, currencies) are touched in Python.
No Beam, no HTTP.
"""
import collections
import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from anycost import cbf
from anycost.inputs import tags, typed_text

_STRING = pa.string()
_NULL = pa.scalar(None, _STRING)

# FOCUS column -> CBF column. Why each one (the table in docs/data-rules.md says the same):
MAPPING = (
    ("ChargePeriodStart", cbf.USAGE_START),          # the charge's start; its UTC month is the row's month
    ("ChargePeriodEnd", cbf.USAGE_END),              # accepted by CBF, ignored by CloudZero
    ("BilledCost", cbf.COST),                        # what the invoice says: CBF's cost, exactly
    ("EffectiveCost", "cost/amortized_cost"),        # amortized and discounted; CBF's discounted_amortized_cost
                                                     # falls back to amortized_cost, so one column serves both
    ("ListCost", "cost/on_demand_cost"),             # the public price: what on-demand would have cost
    ("ResourceId", cbf.RESOURCE_ID),
    ("ServiceName", "resource/service"),
    ("ServiceCategory", "resource/usage_family"),    # Compute, Storage, ...: a family of usage
    ("SubAccountId", "resource/account"),            # the account / subscription / compartment that used it
    ("RegionId", "resource/region"),
    ("ProviderName", "lineitem/cloud_provider"),
    ("ChargeDescription", "lineitem/description"),
    ("ConsumedQuantity", "usage/amount"),
    ("ConsumedUnit", "usage/units"),
    ("InvoiceId", "bill/invoice_id"),
    ("SkuId", "action/usage_type"),                  # CBF has no SKU column; usage type is what it names
)
# FOCUS 1.3 renames ProviderName; read it when ProviderName is absent or empty.
_FALLBACKS = {"ProviderName": "ServiceProviderName"}
# Columns read to decide a rule, not copied: the line-item type, the currency, the tags.
RULE_COLUMNS = ("ChargeCategory", "ChargeClass", "ChargeFrequency", "CommitmentDiscountId",
                "CommitmentDiscountStatus", "BillingCurrency", "Tags")
REQUIRED_COLUMNS = ("ChargePeriodStart", "BilledCost")
TAGS = "Tags"
USED_COLUMNS = frozenset([f for f, _ in MAPPING] + list(_FALLBACKS.values()) + list(RULE_COLUMNS))
# Columns only FOCUS has: a CBF run whose header holds two of them was given a FOCUS file.
_SIGNATURE = frozenset({"ChargePeriodStart", "ChargePeriodEnd", "BilledCost", "EffectiveCost", "ListCost",
                        "ChargeCategory", "BillingCurrency", "BillingPeriodStart", "ProviderName",
                        "BillingAccountId", "SubAccountId"})

# ChargeCategory -> lineitem/type, before the commitment refinements in `_lineitem_types`.
CATEGORIES = {"usage": "Usage", "purchase": "Purchase", "tax": "Tax", "credit": "Credit",
              "adjustment": "Adjustment"}
_TYPES = ("Usage", "Purchase", "Tax", "Credit", "Adjustment",
          "CommittedUsePurchase", "CommittedUseRecurringFee", "CommittedUseVacancy")
_CODE = {name: code for code, name in enumerate(_TYPES)}

SYNTHETIC_ID_TYPE = "focus-charge"
_NO_SECONDS = r"^([0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2})(Z|[+-][0-9]{2}:[0-9]{2})?$"
_NAIVE_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?)?$"

# Counter names, as they appear in the run report's `input_rules`.
NULL_TEXT = "values_NULL_read_as_empty"
NAIVE_TIMES = "timestamps_without_zone_read_as_utc"
NO_SECONDS = "timestamps_without_seconds_read_as_00"
SYNTHETIC_IDS = "rows_with_synthetic_resource_id"
CORRECTIONS = "rows_with_charge_class_correction"
NO_CATEGORY = "rows_without_charge_category"
NO_CURRENCY = "rows_without_billing_currency"
NEGATIVE = "rows_with_negative_billed_cost"
COMMITMENT_TYPES = "rows_typed_from_commitment_columns"
PROVIDER = "rows_from_provider:"


@dataclasses.dataclass
class FocusBatch:
    """`batch`: CBF text columns, one row per input row. `refused[i]` marks a row that
    must not be sent, `reasons[i]` says why. `counts`: rows (or values) each rule touched."""
    batch: pa.RecordBatch
    refused: np.ndarray
    reasons: np.ndarray
    counts: Dict[str, int]
    dropped_columns: Tuple[str, ...]

    def kept(self):
        """The CBF rows that may go on to validation."""
        return self.batch if not self.refused.any() else self.batch.filter(pa.array(~self.refused))


def looks_like_focus(names):
    return len(_SIGNATURE.intersection(names)) >= 2


def dropped_columns(names):
    """Columns of a FOCUS header that are not read: no CBF home, or a provider's `x_` column."""
    return tuple(n for n in names if n not in USED_COLUMNS and not cbf.is_cbf_column(n))


def to_cbf(batch: pa.RecordBatch, currency: str = "USD", tag_keys: str = "sanitize") -> FocusBatch:
    """Map one batch of FOCUS rows to CBF text columns (see the module docstring).

    `currency`: rows whose BillingCurrency is another currency are refused. `tag_keys`:
    `sanitize` makes every tag key acceptable, `refuse` refuses rows with a bad key.
    Columns already named as CBF columns (after a column map, say) pass through."""
    n = batch.num_rows
    counts = collections.Counter()
    refusals = _Refusals(n)
    columns, fields = {}, {}
    for field, column in zip(batch.schema, batch.columns):
        if field.name == TAGS or not (field.name in USED_COLUMNS or cbf.is_cbf_column(field.name)):
            continue
        text, metadata = _as_text(field, column, counts)
        columns[field.name], fields[field.name] = text, metadata

    def get(name):
        return columns.get(name)

    out, metadata = {}, {}
    for focus_name, cbf_name in MAPPING:
        column = get(focus_name)
        fallback = _FALLBACKS.get(focus_name)
        if fallback and get(fallback) is not None:
            column = get(fallback) if column is None else pc.coalesce(column, get(fallback))
        if column is not None:
            out[cbf_name], metadata[cbf_name] = column, fields.get(focus_name) or fields.get(fallback)
    for name in (cbf.USAGE_START, cbf.USAGE_END):
        if name in out and not metadata[name]:
            out[name] = _add_seconds(out[name], counts)
            counts[NAIVE_TIMES] += _count(pc.match_substring_regex(out[name], _NAIVE_TIME))

    lineitem_type = _lineitem_types(get, n, counts, refusals)
    if lineitem_type is not None:
        out[cbf.LINEITEM_TYPE], metadata[cbf.LINEITEM_TYPE] = lineitem_type, None
    _check_currency(get("BillingCurrency"), currency, counts, refusals)

    tag_columns = {}
    if TAGS in batch.schema.names:
        tag_columns = _tags(batch.column(batch.schema.get_field_index(TAGS)), tag_keys, counts, refusals)
    _resource_ids(out, tag_columns, get, counts)
    for name, column in tag_columns.items():
        out[name], metadata[name] = column, None

    dropped = list(dropped_columns(batch.schema.names))
    for name, column in columns.items():  # CBF columns given directly (a column map's targets)
        if cbf.is_cbf_column(name):
            if name in out:
                dropped.append(name)
            else:
                out[name], metadata[name] = column, fields[name]
    cost = out.get(cbf.COST)
    if cost is not None:
        counts[NEGATIVE] += _count(pc.starts_with(cost, "-"))
    provider = out.get("lineitem/cloud_provider")
    if provider is not None:
        for entry in pc.value_counts(pc.drop_null(provider)).to_pylist():
            counts[PROVIDER + entry["values"]] += entry["counts"]

    schema = pa.schema([pa.field(name, _STRING, metadata=metadata[name]) for name in out])
    result = pa.RecordBatch.from_arrays(list(out.values()), schema=schema)
    return FocusBatch(result, refusals.any, refusals.reasons, {k: v for k, v in counts.items() if v},
                      tuple(dropped))


class _Refusals:
    def __init__(self, n):
        self.any = np.zeros(n, bool)
        self.reasons = np.empty(n, object)

    def add(self, mask, reason):
        """`reason`: one text, or per-row texts."""
        for position in np.flatnonzero(mask):
            text = reason if isinstance(reason, str) else reason[position]
            self.reasons[position] = text if self.reasons[position] is None else self.reasons[position] + "; " + text
        self.any |= mask


def _as_text(field, column, counts):
    """A column as CBF text with its kind metadata; in text, `NULL` and `` mean empty."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not pa.types.is_string(column.type):
        column, kind = typed_text.text_and_kind(column)
        if kind:
            return column, {typed_text.KIND_KEY: kind}
    elif (field.metadata or {}).get(typed_text.KIND_KEY):
        return column, field.metadata
    return _null_text(column, counts), None


def _null_text(column, counts):
    """The literal text `NULL` (as FOCUS exports write an empty value) and `` become null."""
    if column.null_count == len(column):
        return column
    literal = pc.equal(column, "NULL")
    found = _count(literal)
    if found:
        counts[NULL_TEXT] += found
    empty = pc.or_(literal, pc.equal(column, ""))
    return pc.if_else(empty, _NULL, column) if found or pc.any(empty).as_py() else column


def _add_seconds(column, counts):
    """`2024-09-18T22:00Z` (minutes only, as some exports write) reads as `2024-09-18T22:00:00Z`."""
    short = _count(pc.match_substring_regex(column, _NO_SECONDS))
    if not short:
        return column
    counts[NO_SECONDS] += short
    return pc.replace_substring_regex(column, _NO_SECONDS, r"\1:00\2")


def _count(boolean_array):
    return int(pc.sum(pc.fill_null(pc.cast(boolean_array, pa.int64()), 0)).as_py() or 0)


def _mask(boolean_array):
    return pc.fill_null(boolean_array, False).to_numpy(zero_copy_only=False)


def _lower(column):
    return None if column is None else pc.utf8_lower(pc.utf8_trim_whitespace(column))


def _lineitem_types(get, n, counts, refusals):
    """ChargeCategory (and ChargeFrequency, CommitmentDiscountId, CommitmentDiscountStatus)
    as lineitem/type:

    - Usage -> Usage, even when negative (the sign carries the refund); Usage of a
      commitment with CommitmentDiscountStatus Unused -> CommittedUseVacancy;
    - Purchase of a commitment (CommitmentDiscountId set) -> CommittedUseRecurringFee when
      ChargeFrequency is Recurring, else CommittedUsePurchase; any other Purchase -> Purchase;
    - Tax, Credit, Adjustment -> the same name. ChargeClass Correction keeps its category.
    Values are read case-insensitively. Empty -> left out (CBF's default, Usage), counted;
    anything else refuses the row."""
    category = _lower(get("ChargeCategory"))
    if category is None:
        counts[NO_CATEGORY] += n
        return None
    codes = np.full(n, -1, np.int64)
    for value, name in CATEGORIES.items():
        codes[_mask(pc.equal(category, value))] = _CODE[name]
    commitment = _mask(pc.is_valid(get("CommitmentDiscountId"))) if get("CommitmentDiscountId") is not None \
        else np.zeros(n, bool)
    status, frequency = _lower(get("CommitmentDiscountStatus")), _lower(get("ChargeFrequency"))
    refined = np.zeros(n, bool)
    if status is not None:
        vacancy = (codes == _CODE["Usage"]) & _mask(pc.equal(status, "unused"))
        codes[vacancy], refined = _CODE["CommittedUseVacancy"], refined | vacancy
    purchase = (codes == _CODE["Purchase"]) & commitment
    recurring = purchase & (_mask(pc.equal(frequency, "recurring")) if frequency is not None else False)
    codes[purchase] = _CODE["CommittedUsePurchase"]
    codes[recurring] = _CODE["CommittedUseRecurringFee"]
    refined |= purchase
    if refined.any():
        counts[COMMITMENT_TYPES] += int(refined.sum())
    if get("ChargeClass") is not None:
        counts[CORRECTIONS] += _count(pc.equal(_lower(get("ChargeClass")), "correction"))
    missing = _mask(pc.is_null(category))
    if missing.any():
        counts[NO_CATEGORY] += int(missing.sum())
    unknown = (codes < 0) & ~missing
    if unknown.any():
        original = get("ChargeCategory")
        for value in set(original.filter(pa.array(unknown)).to_pylist()):
            refusals.add(unknown & _mask(pc.equal(original, value)),
                         f"ChargeCategory {value!r} is not a FOCUS charge category "
                         f"({', '.join(CATEGORIES.values())})")
    return pa.array(_TYPES, _STRING).take(pa.array(codes, mask=codes < 0))


def _check_currency(billing_currency, currency, counts, refusals):
    """CBF has no currency: a row in another currency than the run's is refused."""
    if billing_currency is None:
        counts[NO_CURRENCY] += len(refusals.any)
        return
    code = pc.utf8_upper(pc.utf8_trim_whitespace(billing_currency))
    counts[NO_CURRENCY] += _count(pc.is_null(code))
    other = _mask(pc.not_equal(code, currency.upper()))
    if other.any():
        for value in set(billing_currency.filter(pa.array(other)).to_pylist()):
            refusals.add(other & _mask(pc.equal(billing_currency, value)),
                         f"BillingCurrency is {value}, not {currency.upper()} (--currency): CBF has no currency "
                         "column, so this row cannot be sent with the run's other rows")


def _tags(column, tag_keys, counts, refusals):
    """`resource/tag:<key>` columns over the rows; see anycost.inputs.tags for the rules."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_string(column.type):
        column = _null_text(column, counts)
    unit_tags = tags.read_tags(column)
    merged = tags.merge_keys(unit_tags.columns, unit_tags.units, sanitize=tag_keys == "sanitize")
    weights = unit_tags.row_weights()
    flags = dict(merged.flags)
    if unit_tags.unreadable is not None:
        flags[tags.UNREADABLE] = unit_tags.unreadable
    for name, mask in flags.items():
        if mask.any():
            counts[name] += int(weights[mask].sum())
    if merged.refused is not None:
        if unit_tags.codes is None:
            rows, positions = merged.refused, np.arange(len(merged.refused))
        else:
            positions = pc.fill_null(unit_tags.codes, 0).to_numpy(zero_copy_only=False)
            rows = merged.refused[positions] & _mask(pc.is_valid(unit_tags.codes))
        refusals.add(rows, merged.reasons[positions])
    return {name: unit_tags.to_rows(unit_column) for name, unit_column in merged.columns.items()}


def synthetic_resource_ids(service, account, n):
    """`focus-charge:<ServiceName>@<SubAccountId>` (leading `/` and `:` removed, the others
    become `_`, a missing part is `unknown`): stable, readable, one per service and account."""
    def part(column):
        text = pc.fill_null(column if column is not None else pa.nulls(n, _STRING), "unknown")
        return pc.replace_substring(pc.replace_substring(pc.utf8_ltrim(text, "/:"), "/", "_"), ":", "_")
    return pc.binary_join_element_wise(SYNTHETIC_ID_TYPE + ":", part(service), "@", part(account), "")


def _resource_ids(out, tag_columns, get, counts):
    """CBF refuses a tag without a resource/id. A FOCUS row with tags and no ResourceId
    (commitment fees, support, taxes on tagged accounts) keeps its tags under a synthetic id."""
    if not tag_columns:
        return
    n = len(next(iter(tag_columns.values())))
    has_tag = np.zeros(n, bool)
    for column in tag_columns.values():
        has_tag |= _mask(pc.is_valid(column))
    resource_id: Optional[pa.Array] = out.get(cbf.RESOURCE_ID)
    need = has_tag & (_mask(pc.is_null(resource_id)) if resource_id is not None else True)
    if not need.any():
        return
    counts[SYNTHETIC_IDS] += int(need.sum())
    synthetic = synthetic_resource_ids(get("ServiceName"), get("SubAccountId"), n)
    base = resource_id if resource_id is not None else pa.nulls(n, _STRING)
    out[cbf.RESOURCE_ID] = pc.if_else(pa.array(need), synthetic, base)
