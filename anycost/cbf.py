"""The Common Bill Format rules, as plain data and small checks.

Everything CloudZero documents about CBF columns lives here, so the rest of the code asks
one place: which columns exist, which are numbers or timestamps, which line-item types and
tag keys are allowed, and which connection ids may become a URL path segment.
No Beam, no HTTP, no Arrow.
"""
import difflib
import re

USAGE_START = "time/usage_start"
USAGE_END = "time/usage_end"
COST = "cost/cost"
RESOURCE_ID = "resource/id"
LINEITEM_TYPE = "lineitem/type"
TAG_PREFIX = "resource/tag:"

# In the order CloudZero's documentation lists them; rows are serialised in this order so
# that the same data gives the same bytes whatever the column order of the source file.
STANDARD_COLUMNS = (
    "lineitem/id",
    LINEITEM_TYPE,
    "lineitem/description",
    "lineitem/cloud_provider",
    USAGE_START,
    USAGE_END,
    RESOURCE_ID,
    "resource/service",
    "resource/account",
    "resource/region",
    "resource/usage_family",
    "action/operation",
    "action/usage_type",
    "action/region",
    "action/account",
    "usage/amount",
    "usage/units",
    COST,
    "cost/discounted_cost",
    "cost/amortized_cost",
    "cost/discounted_amortized_cost",
    "cost/on_demand_cost",
    "bill/invoice_id",
    "k8s/cluster",
    "k8s/namespace",
    "k8s/deployment",
    "k8s/labels",
)
_STANDARD_SET = frozenset(STANDARD_COLUMNS)

TIMESTAMP_COLUMNS = (USAGE_START, USAGE_END)
NUMBER_COLUMNS = (
    "usage/amount",
    COST,
    "cost/discounted_cost",
    "cost/amortized_cost",
    "cost/discounted_amortized_cost",
    "cost/on_demand_cost",
)
REQUIRED_COLUMNS = (USAGE_START, COST)

LINEITEM_TYPES = frozenset({
    "Usage", "Tax", "Support", "Purchase", "CommittedUsePurchase", "Discount", "Credit",
    "Fee", "Adjustment", "CommittedUseVacancy", "CommittedUseRecurringFee",
})

TAG_KEY_PATTERN = re.compile(r"[A-Za-z0-9_.:/=+\-@]+")
CONNECTION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
CONNECTION_ID_RULE = "only letters, digits, '_' and '-', 1 to 128 characters"

OPERATIONS = ("sum", "replace_hourly", "replace_drop")

# The API's documented limits.
MAX_BODY_BYTES = 5_000_000
MAX_ROWS_PER_STREAM_MONTH = 1_000_000
MAX_BYTES_PER_STREAM_MONTH = 70_000_000


def is_tag_column(name):
    return name.startswith(TAG_PREFIX)


def is_valid_tag_column(name):
    return is_tag_column(name) and TAG_KEY_PATTERN.fullmatch(name[len(TAG_PREFIX):]) is not None


def is_cbf_column(name):
    return name in _STANDARD_SET or is_valid_tag_column(name)


def is_valid_connection_id(value):
    return isinstance(value, str) and CONNECTION_ID_PATTERN.fullmatch(value) is not None


def column_problem(name):
    """Why `name` is not a CBF column, or None when it is one."""
    if name in _STANDARD_SET or is_valid_tag_column(name):
        return None
    if is_tag_column(name):
        return (f"tag column {name!r} has a key with characters CloudZero does not allow "
                "(letters, digits and _ . : / = + - @ only, no whitespace); "
                "--tag_keys sanitize replaces each with '_'")
    meant = meant_column(name)
    if name.strip() != name:
        if meant == name.strip():
            which = "required " if meant in REQUIRED_COLUMNS else ""
            return (f"column {name!r} has spaces around the {which}CBF column name {meant!r} (leading or "
                    "trailing whitespace); trim the spaces from the column name")
        return f"column {name!r} has leading or trailing whitespace" + (f"; did you mean {meant!r}?" if meant else "")
    if meant:
        return (f"column {name!r} is not a Common Bill Format column; did you mean {meant!r}? "
                "(column names are case-sensitive)" if meant == name.lower() else
                f"column {name!r} is not a Common Bill Format column; did you mean {meant!r}?")
    return f"column {name!r} is not a Common Bill Format column"


def meant_column(name):
    """The standard CBF column `name` most likely stands for, or None: the same name with spaces
    around it, in other letter case, or with a small typo. A column that has one is never
    worth leaving out, so the advice to drop unknown columns is not given for it."""
    if name in _STANDARD_SET:
        return None
    candidate = name.strip().lower()
    if candidate in _STANDARD_SET:
        return candidate
    close = difflib.get_close_matches(candidate, STANDARD_COLUMNS, n=1, cutoff=0.85)
    return close[0] if close else None


_DISALLOWED_TAG_CHARACTER = re.compile(r"[^A-Za-z0-9_.:/=+\-@]")


def sanitize_tag_key(key):
    """`key` as CloudZero allows it: trimmed, each other character replaced by `_`
    (`' Cost Center'` -> `'Cost_Center'`, `'équipe'` -> `'_quipe'`). Empty when nothing is left."""
    return _DISALLOWED_TAG_CHARACTER.sub("_", key.strip())


def tag_key_priority(key):
    """Sort key deciding which of several keys that sanitise to the same key keeps its
    value in a row: a key that is already valid first, then code point order."""
    return (sanitize_tag_key(key) != key, key)


def canonical_column_order(names):
    """`time/usage_start` (every good row has it), the other standard columns in
    documentation order, then tag columns sorted by key."""
    present = set(names)
    standard = [c for c in (USAGE_START,) + STANDARD_COLUMNS if c in present]
    standard = list(dict.fromkeys(standard))
    tags = sorted(n for n in present if is_tag_column(n))
    return standard + tags
