"""anycost.bodies.packing: bodies within the limit, nothing lost or reordered, deterministic keys,
monthly limits, replace_hourly and replace_drop rules."""
import hashlib
import json
import random
from decimal import Decimal

import numpy as np
from hypothesis import given, settings, strategies as st

from anycost import cbf
from anycost.inputs import values
from anycost.inputs.chunking import Chunk
from anycost.bodies import packing
from anycost.bodies.packing import cut_bodies, idempotency_key, plan_stream_month

MONTH = "2024-08"


def row_json(i, cost="1", hour=0, pad=0):
    row = {"time/usage_start": f"2024-08-{hour // 24 + 1:02d}T{hour % 24:02d}:00:00Z", "cost/cost": cost,
           "lineitem/id": f"r{i}", "lineitem/description": "x" * pad}
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode()


def make_chunk(order, rows, costs=None, hours=None):
    """A Chunk as normalise builds it: each row's JSON plus a comma, and their lengths."""
    costs = costs or ["1"] * len(rows)
    return Chunk(order, len(rows), b"".join(r + b"," for r in rows),
                 np.array([len(r) + 1 for r in rows], np.int32).tobytes(),
                 values.decimal_text(values.exact_sum(costs)),
                 b"" if hours is None else np.array(hours, np.uint16).tobytes())


def split_into_chunks(rows, sizes, hours=None):
    chunks, start = [], 0
    for index, size in enumerate(sizes):
        part = rows[start:start + size]
        if part:
            chunks.append(make_chunk((0, index // 3, index), part,
                                     hours=None if hours is None else hours[start:start + size]))
        start += size
    if start < len(rows):
        chunks.append(make_chunk((1, 0, 0), rows[start:], hours=None if hours is None else hours[start:]))
    return chunks


def parse(body):
    doc = json.loads(body)
    assert list(doc) == ["month", "operation", "data"]
    assert all(isinstance(v, str) for row in doc["data"] for v in row.values())
    return doc


def body_rows(plan):
    """Each row of every body, re-serialised exactly as in the body bytes."""
    out = []
    for body in plan.bodies:
        doc = parse(body.body)
        out += [json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode() for r in doc["data"]]
    return out


# ----- basic behaviour ------------------------------------------------------------------------

def test_one_small_month_is_one_body():
    rows = [row_json(i) for i in range(3)]
    plan = plan_stream_month("c1", MONTH, [make_chunk((0,), rows)], "sum", 5_000_000)
    assert plan.refused is None and plan.row_count == 3 and plan.cost_total == "3"
    [body] = plan.bodies
    assert body.body == b'{"month":"2024-08","operation":"sum","data":[' + b",".join(rows) + b"]}"
    assert (body.seq, body.count, body.row_count, body.byte_count) == (1, 1, 3, len(body.body))
    assert body.idempotency_key == idempotency_key("c1", MONTH, "sum", 1, body.body)
    assert plan.row_bytes == sum(len(r) for r in rows)
    assert body.describe() == "c1 2024-08 body 1/1"


def test_body_exactly_at_the_limit_fits_and_one_byte_less_splits():
    rows = [row_json(i) for i in range(4)]
    whole = len(b'{"month":"2024-08","operation":"sum","data":[]}') + sum(len(r) for r in rows) + 3
    exact = plan_stream_month("c", MONTH, [make_chunk((0,), rows)], "sum", whole)
    assert [b.byte_count for b in exact.bodies] == [whole]
    smaller = plan_stream_month("c", MONTH, [make_chunk((0,), rows)], "sum", whole - 1)
    assert len(smaller.bodies) == 2 and all(b.byte_count <= whole - 1 for b in smaller.bodies)


def test_row_that_cannot_fit_refuses_the_month():
    rows = [row_json(0), row_json(1, pad=500)]
    plan = plan_stream_month("c", MONTH, [make_chunk((0,), rows)], "sum", 300)
    assert plan.bodies == [] and "a row holds more than fits in one body of 300 bytes" in plan.refused


def test_cost_total_is_exact():
    chunks = [make_chunk((0,), [row_json(0)], ["0.1"]), make_chunk((1,), [row_json(1)], ["0.2"]),
              make_chunk((2,), [row_json(2)], ["12345678901234567890.000000000000000001"])]
    plan = plan_stream_month("c", MONTH, chunks, "sum", 5_000_000)
    assert Decimal(plan.cost_total) == Decimal("12345678901234567890.300000000000000001")


def test_idempotency_key_depends_on_every_part():
    base = ("c1", MONTH, "sum", 1, b'{"x":1}')
    keys = {idempotency_key(*base)}
    for index, other in enumerate(["c2", "2024-09", "replace_hourly", 2, b'{"x":2}']):
        changed = list(base)
        changed[index] = other
        keys.add(idempotency_key(*changed))
    assert len(keys) == 6
    assert idempotency_key(*base) == idempotency_key(*base)
    assert len(idempotency_key(*base)) == 64 and int(idempotency_key(*base), 16) >= 0


def test_idempotency_key_parts_cannot_run_together():
    assert idempotency_key("c1", "2024-08", "sum", 1, b"x") != idempotency_key("c12", "024-08", "sum", 1, b"x")


def test_identical_bodies_in_one_month_get_different_keys():
    rows = [row_json(0)] * 10
    one = len(b'{"month":"2024-08","operation":"sum","data":[]}') + len(rows[0])
    plan = plan_stream_month("c", MONTH, [make_chunk((0,), rows)], "sum", one)
    assert len(plan.bodies) == 10 and len({b.body for b in plan.bodies}) == 1
    assert len({b.idempotency_key for b in plan.bodies}) == 10


def test_key_is_sha256_of_the_documented_parts():
    digest = hashlib.sha256(b"c\n2024-08\nsum\n3\n" + b"BODY").hexdigest()
    assert idempotency_key("c", "2024-08", "sum", 3, b"BODY") == digest


# ----- monthly limits -------------------------------------------------------------------------

def test_monthly_row_limit_refuses(monkeypatch):
    monkeypatch.setattr(cbf, "MAX_ROWS_PER_STREAM_MONTH", 5)
    ok = plan_stream_month("c", MONTH, [make_chunk((0,), [row_json(i) for i in range(5)])], "sum", 5_000_000)
    assert ok.refused is None and len(ok.bodies) == 1
    over = plan_stream_month("c", MONTH, [make_chunk((0,), [row_json(i) for i in range(3)]),
                                          make_chunk((1,), [row_json(i) for i in range(3)])], "sum", 5_000_000)
    assert over.bodies == [] and over.row_count == 6
    assert "6 rows" in over.refused and "at most 5 rows per stream and month" in over.refused


def test_monthly_byte_limit_refuses(monkeypatch):
    rows = [row_json(i) for i in range(10)]
    total = sum(len(r) for r in rows)
    monkeypatch.setattr(cbf, "MAX_BYTES_PER_STREAM_MONTH", total)
    assert plan_stream_month("c", MONTH, [make_chunk((0,), rows)], "sum", 5_000_000).refused is None
    monkeypatch.setattr(cbf, "MAX_BYTES_PER_STREAM_MONTH", total - 1)
    over = plan_stream_month("c", MONTH, [make_chunk((0,), rows)], "sum", 5_000_000)
    assert over.bodies == [] and f"{total} bytes of rows" in over.refused and "per stream and month" in over.refused
    assert over.cost_total == "10"  # the summary still says what was refused


# ----- replace_drop and replace_hourly --------------------------------------------------------

def test_replace_drop_one_body_is_fine():
    rows = [row_json(i) for i in range(5)]
    plan = plan_stream_month("c", MONTH, [make_chunk((0,), rows)], "replace_drop", 5_000_000)
    assert plan.refused is None and len(plan.bodies) == 1
    assert parse(plan.bodies[0].body)["operation"] == "replace_drop"


def test_replace_drop_refuses_more_than_one_body():
    rows = [row_json(i, pad=100) for i in range(5)]
    plan = plan_stream_month("c", MONTH, [make_chunk((0,), rows)], "replace_drop", 500)
    assert plan.bodies == [] and "replace_drop" in plan.refused and "needs" in plan.refused


def test_replace_hourly_cuts_only_at_hour_boundaries():
    hours = [0, 0, 0, 1, 1, 2, 2, 2, 2, 5]
    rows = [row_json(i, hour=h, pad=20) for i, h in enumerate(hours)]
    room = len(b'{"month":"2024-08","operation":"replace_hourly","data":[]}') + 5 * (len(rows[0]) + 1)
    plan = plan_stream_month("c", MONTH, [make_chunk((0,), rows, hours=hours)], "replace_hourly", room)
    assert plan.refused is None
    per_body = [[r["time/usage_start"][8:13] for r in parse(b.body)["data"]] for b in plan.bodies]
    seen = set()
    for body_hours in per_body:
        assert not (set(body_hours) & seen)  # no hour is split over two bodies
        seen |= set(body_hours)
    assert sum(len(h) for h in per_body) == 10
    assert all(b.byte_count <= room for b in plan.bodies)


def test_replace_hourly_refuses_an_hour_that_cannot_fit():
    hours = [3] * 6
    rows = [row_json(i, hour=3, pad=20) for i in range(6)]
    room = len(b'{"month":"2024-08","operation":"replace_hourly","data":[]}') + 5 * (len(rows[0]) + 1)
    plan = plan_stream_month("c", MONTH, [make_chunk((0,), rows, hours=hours)], "replace_hourly", room)
    assert plan.bodies == [] and "one UTC hour" in plan.refused


def test_replace_hourly_groups_hours_stably():
    hours = [5, 1, 5, 1, 0]
    rows = [row_json(i, hour=h) for i, h in enumerate(hours)]
    chunks = [make_chunk((0,), rows[:2], hours=hours[:2]), make_chunk((1,), rows[2:], hours=hours[2:])]
    plan = plan_stream_month("c", MONTH, chunks, "replace_hourly", 5_000_000)
    ids = [r["lineitem/id"] for r in parse(plan.bodies[0].body)["data"]]
    assert ids == ["r4", "r1", "r3", "r0", "r2"]


# ----- cut_bodies -----------------------------------------------------------------------------

def test_cut_bodies_examples():
    assert cut_bodies(np.array([], np.int64), 10) == []
    assert cut_bodies(np.array([3, 3, 3, 3]), 6) == [(0, 2), (2, 4)]
    assert cut_bodies(np.array([3, 3, 3, 3]), 7) == [(0, 2), (2, 4)]
    assert cut_bodies(np.array([3, 3, 3, 3]), 9) == [(0, 3), (3, 4)]
    assert cut_bodies(np.array([3, 8, 3]), 7) is None
    assert cut_bodies(np.array([3, 3, 3, 3]), 7, cuts=np.array([3, 4])) is None
    assert cut_bodies(np.array([3, 3, 3, 3]), 9, cuts=np.array([1, 3, 4])) == [(0, 3), (3, 4)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=60), st.integers(1, 200), st.data())
def test_cut_bodies_properties(lengths, room, data):
    lengths = np.array(lengths, np.int64)
    use_cuts = data.draw(st.booleans())
    cuts = None
    if use_cuts:
        inner = data.draw(st.sets(st.integers(1, len(lengths) - 1))) if len(lengths) > 1 else set()
        cuts = np.array(sorted(inner | {len(lengths)}))
    spans = cut_bodies(lengths, room, cuts)
    allowed = set(range(1, len(lengths) + 1)) if cuts is None else set(cuts.tolist())
    # the pieces between allowed ends: a piece larger than room makes it impossible
    ends = sorted(allowed)
    pieces = [int(lengths[a:b].sum()) for a, b in zip([0] + ends[:-1], ends)]
    if max(pieces) > room:
        assert spans is None
        return
    assert spans[0][0] == 0 and spans[-1][1] == len(lengths)
    for (a, b), (c, _) in zip(spans, spans[1:]):
        assert b == c
    for start, end in spans:
        assert end in allowed and int(lengths[start:end].sum()) <= room
    for (start, end), (_, next_end) in zip(spans, spans[1:]):  # greedy: the next allowed end did not fit
        following = min(e for e in ends if e > end)
        assert int(lengths[start:following].sum()) > room


# ----- plan_stream_month properties -----------------------------------------------------------

ROW_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=40)


@st.composite
def month_input(draw):
    n = draw(st.integers(1, 80))
    rows = [row_json(i, cost=str(draw(st.integers(-1000, 1000))), hour=draw(st.integers(0, 30)),
                     pad=draw(st.integers(0, 60))) for i in range(n)]
    extra = draw(st.lists(ROW_TEXT, min_size=n, max_size=n))
    rows = [r[:-1] + b',"k8s/labels":' + json.dumps(e, ensure_ascii=False).encode() + b"}"
            for r, e in zip(rows, extra)]
    sizes = draw(st.lists(st.integers(1, 15), min_size=1, max_size=20))
    max_body = draw(st.integers(150, 3000))
    return rows, sizes, max_body


@settings(max_examples=150, deadline=None)
@given(month_input(), st.randoms(use_true_random=False))
def test_plan_properties_sum(case, rnd):
    rows, sizes, max_body = case
    chunks = split_into_chunks(rows, sizes)
    plan = plan_stream_month("conn-1", MONTH, chunks, "sum", max_body)
    longest = max(len(r) for r in rows)
    envelope = len(b'{"month":"2024-08","operation":"sum","data":[]}')
    if longest + envelope > max_body:
        assert plan.refused and plan.bodies == []
        return
    assert plan.refused is None and plan.row_count == len(rows)
    assert [b.seq for b in plan.bodies] == list(range(1, len(plan.bodies) + 1))
    for body in plan.bodies:
        assert body.byte_count == len(body.body) <= max_body
        doc = parse(body.body)
        assert doc["month"] == MONTH and doc["operation"] == "sum" and len(doc["data"]) == body.row_count
        assert body.count == len(plan.bodies)
        assert body.idempotency_key == idempotency_key("conn-1", MONTH, "sum", body.seq, body.body)
    assert body_rows(plan) == rows  # nothing lost, nothing reordered, bytes unchanged
    # fewest bodies: each body but the last could not also take the next row
    for body, following in zip(plan.bodies, plan.bodies[1:]):
        next_row = json.dumps(parse(following.body)["data"][0], separators=(",", ":"),
                              ensure_ascii=False).encode()
        assert body.byte_count + 1 + len(next_row) > max_body
    # deterministic, whatever order the chunks come back in after the shuffle
    shuffled = list(chunks)
    rnd.shuffle(shuffled)
    again = plan_stream_month("conn-1", MONTH, shuffled, "sum", max_body)
    assert again == plan


@settings(max_examples=100, deadline=None)
@given(month_input(), st.randoms(use_true_random=False))
def test_plan_properties_replace_hourly(case, rnd):
    rows, sizes, max_body = case
    hours = [(int(json.loads(r)["time/usage_start"][8:10]) - 1) * 24 + int(json.loads(r)["time/usage_start"][11:13])
             for r in rows]
    chunks = split_into_chunks(rows, sizes, hours)
    plan = plan_stream_month("c", MONTH, chunks, "replace_hourly", max_body)
    shuffled = list(chunks)
    rnd.shuffle(shuffled)
    assert plan_stream_month("c", MONTH, shuffled, "replace_hourly", max_body) == plan
    envelope = len(b'{"month":"2024-08","operation":"replace_hourly","data":[]}')
    per_hour = {}
    for row, hour in zip(rows, hours):
        per_hour[hour] = per_hour.get(hour, 0) + len(row) + 1
    if max(per_hour.values()) - 1 + envelope > max_body:
        assert plan.refused and "one UTC hour" in plan.refused and plan.bodies == []
        return
    assert plan.refused is None
    order = sorted(range(len(rows)), key=lambda i: hours[i])  # stable: input order within an hour
    assert body_rows(plan) == [rows[i] for i in order]
    seen = set()
    for body in plan.bodies:
        assert body.byte_count <= max_body
        body_hours = {r["time/usage_start"][8:13] for r in parse(body.body)["data"]}
        assert not body_hours & seen
        seen |= body_hours


def test_plan_is_a_pure_function_of_its_input():
    rows = [row_json(i, pad=i) for i in range(30)]
    chunks = split_into_chunks(rows, [4, 7, 1, 9])
    first = plan_stream_month("c", MONTH, chunks, "sum", 400)
    second = plan_stream_month("c", MONTH, list(reversed(chunks)), "sum", 400)
    assert [(b.body, b.idempotency_key) for b in first.bodies] == [(b.body, b.idempotency_key) for b in second.bodies]
    assert len(first.bodies) > 3
    random.Random(1).shuffle(chunks)
    assert plan_stream_month("c", MONTH, chunks, "sum", 400) == first


def test_body_cost_is_the_exact_sum_of_its_rows_costs_whatever_the_other_values_hold():
    tag = '\\"cost/cost\\":\\"1000\\"'  # a value that spells the key, escaped as every body holds it
    body = ('{"month":"2024-08","operation":"sum","data":[{"time/usage_start":"2024-08-01T00:00:00Z",'
            f'"cost/cost":"0.1","resource/tag:note":"{tag}"}},'
            '{"time/usage_start":"2024-08-01T00:00:00Z","cost/cost":"-2.000000000000000000001"}]}').encode()
    assert json.loads(body)["data"][0]["resource/tag:note"] == '"cost/cost":"1000"'
    assert packing.body_cost(body) == "-1.900000000000000000001"


def test_a_chunk_whose_bytes_disagree_with_its_row_lengths_is_an_error_not_a_shifted_body():
    rows = [row_json(i, pad=i) for i in range(12)]
    chunks = split_into_chunks(rows, [5, 7])
    short = chunks[0]._replace(rows=chunks[0].rows[:-3])  # three bytes lost, lengths unchanged
    try:
        plan_stream_month("c", MONTH, [short, chunks[1]], "sum", 400)
    except ValueError as err:
        assert "its row lengths say" in str(err)
    else:
        raise AssertionError("a chunk three bytes short was packed")


class _CountedChunk(Chunk):
    """A Chunk that counts how often its rows are read back."""
    __slots__ = ()
    reads = []

    def json_rows(self):
        _CountedChunk.reads.append(self.order)
        return super().json_rows()


def test_lazy_bodies_are_built_only_as_they_are_taken_and_equal_the_eager_ones():
    rows = [row_json(i, pad=i % 50) for i in range(60)]
    chunks = [_CountedChunk(*c) for c in split_into_chunks(rows, [7, 9, 11, 13, 20])]
    eager = plan_stream_month("c", MONTH, chunks, "sum", 900)
    _CountedChunk.reads.clear()
    lazy = plan_stream_month("c", MONTH, list(reversed(chunks)), "sum", 900, lazy=True)
    assert isinstance(lazy.bodies, packing.LazyBodies) and _CountedChunk.reads == []
    assert len(lazy.bodies) == len(eager.bodies) == lazy.body_count > 3
    taken = iter(lazy.bodies)
    first = next(taken)
    assert first == eager.bodies[0]
    assert 0 < len(_CountedChunk.reads) < len(chunks)  # only the chunks the first body needs
    assert [first] + list(taken) == eager.bodies
    assert lazy == eager  # equal plans; and iterating again builds the same bytes


def test_lazy_is_ignored_when_rows_must_be_put_in_another_order():
    rows = [row_json(i) for i in range(10)]
    unordered = [c._replace(order=None) for c in split_into_chunks(rows, [4, 6])]
    assert isinstance(plan_stream_month("c", MONTH, unordered, "sum", 400, lazy=True).bodies, list)
