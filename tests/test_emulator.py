"""Tests of the local AnyCost Stream emulator (anycost_emulator/emulator.py). Loopback only, fast."""

from __future__ import annotations

import ast
import contextlib
import csv
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from anycost_emulator import cli
from anycost_emulator import rules as rules_module
from anycost_emulator import store as store_module
from anycost_emulator import Emulator, FaultConfig, validate_body

KEY = "test-api-key-123"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIXTURE = PROJECT_ROOT / "tests" / "fixtures" / "cloudzero-example-cbf.csv"  # see tests/fixtures/README.md


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def fixture_rows() -> list[dict]:
    with FIXTURE.open(newline="") as handle:
        return list(csv.DictReader(handle))


def row(start: str = "2024-08-16T13:00:00Z", cost: str = "1", **extra: str) -> dict:
    return {"time/usage_start": start, "cost/cost": cost, **extra}


def body(data: list, month: str = "2024-08", operation: str | None = "sum") -> dict:
    result = {"month": month, "data": data}
    if operation is not None:
        result["operation"] = operation
    return result


class Client:
    """A tiny AnyCost client over one keep-alive session."""

    def __init__(self, emu: Emulator, key: str = KEY) -> None:
        self.emu = emu
        self.session = requests.Session()
        self.key = key

    def drops_url(self, conn: str = "c1") -> str:
        return f"{self.emu.url}/v2/connections/billing/anycost/{conn}/billing_drops"

    def headers(self, **extra: str) -> dict:
        headers = {"Authorization": self.key}
        headers.update({k.replace("_", "-"): v for k, v in extra.items()})
        return headers

    def create(self, payload: dict, conn: str = "c1", timeout: float = 5, **headers: str):
        return self.session.post(self.drops_url(conn), json=payload, timeout=timeout,
                                 headers=self.headers(**headers))

    def create_raw(self, data: bytes, conn: str = "c1", **headers: str):
        merged = {"Content-Type": "application/json", **self.headers(**headers)}
        return self.session.post(self.drops_url(conn), data=data, headers=merged, timeout=10)

    def list(self, conn: str = "c1", **headers: str):
        return self.session.get(self.drops_url(conn), headers=self.headers(**headers), timeout=5)

    def month(self, month: str, conn: str = "c1", **headers: str):
        return self.session.get(f"{self.drops_url(conn)}/{month}", headers=self.headers(**headers),
                                timeout=5)

    def validate(self, payload: dict, **headers: str):
        url = f"{self.emu.url}/v2/connections/billing/anycost/validate_billing_drop"
        return self.session.post(url, json=payload, headers=self.headers(**headers), timeout=5)


def error_message(response: requests.Response) -> str:
    payload = response.json()
    assert payload["error"]["type"] == "ValidationError"
    return payload["error"]["message"]


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


@pytest.fixture
def emu():
    with Emulator(api_key=KEY) as running:
        yield running


@pytest.fixture
def client(emu):
    return Client(emu)


# ---------------------------------------------------------------------------------------------
# basics: the real CBF sample, listing, reading, routing
# ---------------------------------------------------------------------------------------------

def test_fixture_round_trip(emu, client):
    rows = fixture_rows()
    response = client.create(body(rows, month="2024-09", operation=None))
    assert response.status_code == 200
    drop = response.json()["connection"]
    assert drop["month"] == "2024-09" and drop["row_count"] == 6
    uuid.UUID(drop["drop_id"])

    assert client.month("2024-09").json() == {"billing_drop": rows}
    assert client.list().json() == {"billing_drops": [drop]}
    assert emu.rows("c1", "2024-09") == rows
    assert emu.totals() == {"c1": {"2024-09": {"rows": 6, "cost": Decimal("105.3"), "bodies": 1}}}
    assert emu.post_count == 1 and emu.applied_drops == 1


def test_read_empty_month_is_404_and_unknown_connection_lists_nothing(client):
    response = client.month("2024-08")
    assert response.status_code == 404 and "message" in response.json()
    assert client.list("never-used").json() == {"billing_drops": []}


@pytest.mark.parametrize("path", ["/", "/v2/connections/billing/anycost/c1",
                                  "/v2/connections/billing/anycost/c1/billing_drops/2024-08/x",
                                  "/v2/connections/billing/anycost/c1/billing_drops/"])
def test_unknown_path_is_404(emu, path):
    response = requests.get(emu.url + path, headers={"Authorization": KEY}, timeout=5)
    assert response.status_code == 404


def test_wrong_method_is_405(client):
    response = client.session.delete(client.drops_url(), headers=client.headers(), timeout=5)
    assert response.status_code == 405


@pytest.mark.parametrize("conn", ["bad.id", "a" * 129, "sp%20ace"])
def test_bad_connection_id_is_400(client, conn):
    response = client.create(body([row()]), conn=conn)
    assert response.status_code == 400
    assert "connection_id" in error_message(response)


def test_longest_connection_id_is_accepted(client):
    assert client.create(body([row()]), conn="a-_9" * 32).status_code == 200


def test_bad_month_in_path_is_400(client):
    response = client.month("2024-13")
    assert response.status_code == 400 and "month" in error_message(response)


def test_only_loopback_is_allowed():
    with pytest.raises(ValueError):
        Emulator(api_key=KEY, host="0.0.0.0")
    with pytest.raises(ValueError):
        Emulator(api_key="")


# ---------------------------------------------------------------------------------------------
# auth and size
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [None, "wrong", f"Bearer {KEY}", f"{KEY} ", KEY.upper()])
def test_auth_requires_the_raw_key(emu, client, header):
    headers = {} if header is None else {"Authorization": header}
    create = client.session.post(client.drops_url(), json=body([row()]), headers=headers, timeout=5)
    read = client.session.get(client.drops_url(), headers=headers, timeout=5)
    validate = client.session.post(
        f"{emu.url}/v2/connections/billing/anycost/validate_billing_drop",
        json=body([row()]), headers=headers, timeout=5)
    for response in (create, read, validate):
        assert response.status_code == 403
        assert response.json() == {"message": "Forbidden"}
        assert KEY not in response.text and KEY not in str(response.headers)
    assert emu.applied_drops == 0 and emu.totals() == {}
    assert emu.post_count == 1  # counted whatever the outcome


def test_body_over_limit_is_413_and_exact_limit_is_accepted(emu, client):
    base = json.dumps(body([row()])).encode()
    at_limit = base + b" " * (5_000_000 - len(base))  # JSON allows trailing whitespace
    over = at_limit + b" "
    response = client.create_raw(over)
    assert response.status_code == 413
    assert response.json() == {"message": "Request Too Long"}
    assert emu.applied_drops == 0
    # the connection is still usable after a 413 (the body was drained)
    assert client.create_raw(at_limit).status_code == 200
    assert emu.max_body_bytes_seen == 5_000_001
    assert emu.totals()["c1"]["2024-08"]["rows"] == 1


def test_validate_endpoint_also_gives_413(emu, client):
    with Emulator(api_key=KEY, max_body_bytes=100) as small:
        response = Client(small).validate(body([row()] * 10))
        assert response.status_code == 413


def test_chunked_request_body_is_read(emu, client):
    data = json.dumps(body([row(), row(cost="2")])).encode()
    chunks = (data[i:i + 7] for i in range(0, len(data), 7))
    response = client.session.post(client.drops_url(), data=chunks, timeout=5,
                                   headers={**client.headers(), "Content-Type": "application/json"})
    assert response.status_code == 200
    assert emu.totals()["c1"]["2024-08"]["cost"] == Decimal("3")
    assert emu.requests[-1].body_bytes == len(data)


# ---------------------------------------------------------------------------------------------
# validation (400 on create, is_valid false on validate)
# ---------------------------------------------------------------------------------------------

BAD_ROWS = [
    # (the bad row, column named in the message, words expected in the message)
    (row(start="2024-09-01T00:00:00Z"), "time/usage_start", "not in the body's month"),
    (row(cost=12), "cost/cost", "must be a string"),
    ({**row(), "resource/tag:env": None}, "resource/tag:env", "must be a string"),
    ({**row(), "custom/column": "x"}, "custom/column", "unknown column"),
    ({**row(), "resource/tag:has space": "x", "resource/id": "i-1"}, "resource/tag:has space",
     "unknown column"),
    ({**row(), "resource/tag:": "x", "resource/id": "i-1"}, "resource/tag:", "unknown column"),
    (row(cost="1.25e-05"), "cost/cost", "invalid decimal"),
    (row(cost="NaN"), "cost/cost", "invalid decimal"),
    (row(cost="+1"), "cost/cost", "invalid decimal"),
    (row(cost="1."), "cost/cost", "invalid decimal"),
    (row(cost=" 1"), "cost/cost", "invalid decimal"),
    (row(cost="1\n"), "cost/cost", "invalid decimal"),
    (row(cost="١٢"), "cost/cost", "invalid decimal"),  # non-ASCII digits
    ({**row(), "cost/amortized_cost": "1,5"}, "cost/amortized_cost", "invalid decimal"),
    ({**row(), "usage/amount": "1e3"}, "usage/amount", "invalid decimal"),
    (row(start="2024-08-16 13:00:00Z"), "time/usage_start", "invalid timestamp"),
    (row(start="2024-08-16T13:00:00"), "time/usage_start", "invalid timestamp"),
    (row(start="2024-08-16"), "time/usage_start", "invalid timestamp"),
    (row(start="2024-02-30T00:00:00Z", cost="1"), "time/usage_start", "invalid timestamp"),
    (row(start="2024-08-16T24:00:00Z"), "time/usage_start", "invalid timestamp"),
    (row(start="2024-08-16T13:00:00+25:00"), "time/usage_start", "invalid timestamp"),
    ({**row(), "time/usage_end": "yesterday"}, "time/usage_end", "invalid timestamp"),
    ({"cost/cost": "1"}, "time/usage_start", "missing required column"),
    ({"time/usage_start": "2024-08-16T13:00:00Z"}, "cost/cost", "missing required column"),
    (row(cost=""), "cost/cost", "required value is empty"),
    (row(start=""), "time/usage_start", "required value is empty"),
    ({**row(), "lineitem/type": "Refund"}, "lineitem/type", "unknown lineitem/type"),
    ({**row(), "lineitem/type": "usage"}, "lineitem/type", "unknown lineitem/type"),
    ({**row(), "resource/tag:env": "prod"}, "resource/id", "required when a resource/tag"),
    ({**row(), "resource/tag:env": "prod", "resource/id": ""}, "resource/id",
     "required when a resource/tag"),
]


@pytest.mark.parametrize("bad_row,column,words", BAD_ROWS)
def test_bad_row_is_400_naming_row_and_column(emu, client, bad_row, column, words):
    response = client.create(body([row(), bad_row]))
    assert response.status_code == 400
    message = error_message(response)
    assert f"data[1][{column!r}]" in message
    assert words in message
    assert emu.applied_drops == 0 and emu.totals() == {}


@pytest.mark.parametrize("bad_row,column,words", BAD_ROWS)
def test_validate_endpoint_reports_the_same_errors(emu, client, bad_row, column, words):
    response = client.validate(body([row(), bad_row]))
    assert response.status_code == 200
    result = response.json()["connection"]
    assert result["is_valid"] is False
    assert any(f"data[1][{column!r}]" in e and words in e for e in result["errors"])
    assert emu.totals() == {} and emu.applied_drops == 0


def test_row_that_is_not_an_object(client):
    response = client.create(body([row(), ["2024-08-16T13:00:00Z", "1"]]))
    assert response.status_code == 400
    assert "data[1]: row must be a JSON object" in error_message(response)


GOOD_ROWS = [
    {**row(), "lineitem/type": "CommittedUseVacancy"},
    {**row(), "lineitem/type": "CommittedUseRecurringFee"},
    {**row(), "lineitem/type": ""},                         # empty: the default (Usage)
    {**row(), "resource/tag:env": ""},                      # empty tag value needs no resource/id
    {**row(), "resource/id": "i-1", "resource/tag:a_b.c:d/e=f+g-h@i": "x"},
    {**row(), "resource/id": "i-1", "resource/tag:Env": "x", "resource/tag:env": "y"},
    row(cost="-12.5"), row(cost="0.0000125"), row(cost="-0"), row(cost="007"),
    row(start="2024-08-16T13:00:00.123456789Z"),
    row(start="2024-08-16T13:00:00+05:30"),
    {**row(), "time/usage_end": ""},
    {**row(), "cost/discounted_cost": "", "cost/amortized_cost": "3", "usage/amount": "0.5"},
    {**row(), **{c: "x" for c in ("lineitem/id", "lineitem/description", "resource/service",
                                  "k8s/labels", "action/region", "bill/invoice_id")}},
]


@pytest.mark.parametrize("good_row", GOOD_ROWS)
def test_good_rows_are_accepted(client, good_row):
    assert validate_body(body([good_row])) == []
    response = client.create(body([good_row]))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("payload,words", [
    ({"data": [row()]}, "month: missing"),
    ({"month": "2024-13", "data": [row()]}, "month: invalid"),
    ({"month": "2024-8", "data": [row()]}, "month: invalid"),
    ({"month": 202408, "data": [row()]}, "month: invalid"),
    ({"month": "2024-08-01", "data": [row()]}, "month: invalid"),
    ({"month": "2024-08", "operation": "upsert", "data": [row()]}, "operation"),
    ({"month": "2024-08", "data": {"rows": []}}, "data: missing or not a list"),
    ({"month": "2024-08"}, "data: missing or not a list"),
    ({"month": "2024-08", "data": [], "extra": 1}, "unknown top-level field 'extra'"),
    ([row()], "body must be a JSON object"),
])
def test_bad_envelope_is_400(emu, client, payload, words):
    response = client.session.post(client.drops_url(), json=payload, headers=client.headers(),
                                   timeout=5)
    assert response.status_code == 400
    assert words in error_message(response)
    assert emu.applied_drops == 0


@pytest.mark.parametrize("data,headers,words", [
    (b"{not json", {}, "not valid UTF-8 JSON"),
    (b'{"month":"2024-08","data":[],"x":NaN}', {}, "not valid UTF-8 JSON"),
    ('{"month":"2024-08","data":[]}'.encode("utf-16"), {}, "not valid UTF-8 JSON"),
    (b'{"month":"2024-08","data":[{"cost/cost":"\xff"}]}', {}, "not valid UTF-8 JSON"),
    (b'{"month":"2024-08","data":[]}', {"Content-Type": "text/plain"}, "Content-Type"),
    (b'{"month":"2024-08","data":[]}', {"Content-Type": "application/json; charset=latin-1"},
     "UTF-8"),
    (b'{"month":"2024-08","data":[]}', {"Content-Encoding": "gzip"}, "Content-Encoding"),
])
def test_bad_transport_is_400(emu, client, data, headers, words):
    merged = {"Content-Type": "application/json", **client.headers(), **headers}
    response = client.session.post(client.drops_url(), data=data, headers=merged, timeout=5)
    assert response.status_code == 400
    assert words in error_message(response)


def test_json_with_charset_utf8_is_accepted(client):
    data = json.dumps(body([row()])).encode()
    headers = {**client.headers(), "Content-Type": "application/json; charset=UTF-8"}
    assert client.session.post(client.drops_url(), data=data, headers=headers).status_code == 200


def test_empty_data_is_ok(emu, client):
    response = client.create(body([], operation="replace_drop"))
    assert response.status_code == 200
    assert response.json()["connection"]["row_count"] == 0
    assert emu.totals()["c1"]["2024-08"] == {"rows": 0, "cost": Decimal(0), "bodies": 1}
    assert client.month("2024-08").status_code == 404  # the month holds nothing


def test_validate_body_is_pure_and_caps_errors(monkeypatch):
    assert validate_body(body(fixture_rows(), month="2024-09")) == []
    monkeypatch.setattr(rules_module, "MAX_REPORTED_ERRORS", 3)
    errors = validate_body(body([row(cost="x")] * 10))
    assert len(errors) == 4 and errors[-1].startswith("too many errors")
    assert errors[0].startswith("data[0]['cost/cost']")


def test_validate_endpoint_valid_body_stores_nothing(emu, client):
    response = client.validate(body(fixture_rows(), month="2024-09"))
    assert response.json() == {"connection": {"is_valid": True, "errors": []}}
    assert emu.totals() == {} and emu.applied_drops == 0 and emu.post_count == 0


def test_validate_endpoint_reports_bad_json_as_invalid(client):
    url = f"{client.emu.url}/v2/connections/billing/anycost/validate_billing_drop"
    response = client.session.post(
        url, data=b"{", headers={**client.headers(), "Content-Type": "application/json"})
    assert response.status_code == 200
    assert response.json()["connection"]["is_valid"] is False


# ---------------------------------------------------------------------------------------------
# months in UTC
# ---------------------------------------------------------------------------------------------

def test_month_is_judged_in_utc(emu, client):
    late = row(start="2024-08-31T23:30:00-01:00")   # 2024-09-01T00:30Z
    early = row(start="2024-09-01T00:30:00+01:00")  # 2024-08-31T23:30Z
    assert client.create(body([late], month="2024-08")).status_code == 400
    assert client.create(body([early], month="2024-09")).status_code == 400
    assert client.create(body([late], month="2024-09")).status_code == 200
    assert client.create(body([early], month="2024-08")).status_code == 200
    totals = emu.totals()["c1"]
    assert totals["2024-08"]["rows"] == 1 and totals["2024-09"]["rows"] == 1


def test_month_may_be_an_iso_datetime(client):
    response = client.create(body([row()], month="2024-08-01T00:00:00Z"))
    assert response.status_code == 200
    assert response.json()["connection"]["month"] == "2024-08"


# ---------------------------------------------------------------------------------------------
# operations
# ---------------------------------------------------------------------------------------------

def month_costs(emu: Emulator, month: str = "2024-08", conn: str = "c1") -> list[str]:
    return [r["cost/cost"] for r in emu.rows(conn, month)]


def test_sum_appends(emu, client):
    client.create(body([row(cost="1"), row(cost="2")]))
    client.create(body([row(cost="3")]))
    assert month_costs(emu) == ["1", "2", "3"]
    assert emu.totals()["c1"]["2024-08"] == {"rows": 3, "cost": Decimal("6"), "bodies": 2}


def test_replace_drop_replaces_the_month_only(emu, client):
    client.create(body([row(cost="1"), row(cost="2")]))
    client.create(body([row(start="2024-09-02T00:00:00Z", cost="9")], month="2024-09"))
    client.create(body([row(cost="5")], operation="replace_drop"))
    assert month_costs(emu) == ["5"]
    assert month_costs(emu, "2024-09") == ["9"]


def test_operation_defaults_to_replace_drop(emu, client):
    client.create(body([row(cost="1")]))
    client.create(body([row(cost="7")], operation=None))
    assert month_costs(emu) == ["7"]


def test_replace_hourly_replaces_only_hours_in_the_body(emu, client):
    client.create(body([
        row(start="2024-08-16T13:00:00Z", cost="1"),
        row(start="2024-08-16T13:59:59Z", cost="2"),
        row(start="2024-08-16T14:00:00Z", cost="3"),
        row(start="2024-08-17T13:00:00Z", cost="4"),
    ]))
    # 15:30+02:00 is 13:30Z: it replaces both 13:00Z rows of the 16th, nothing else.
    client.create(body([row(start="2024-08-16T15:30:00+02:00", cost="10")],
                       operation="replace_hourly"))
    assert month_costs(emu) == ["3", "4", "10"]
    assert emu.totals()["c1"]["2024-08"]["cost"] == Decimal("17")


def test_any_operation_creates_an_empty_month(emu, client):
    for conn, operation in (("a", "sum"), ("b", "replace_drop"), ("c", "replace_hourly")):
        assert client.create(body([row(cost="2")], operation=operation), conn=conn).ok
        assert emu.totals()[conn]["2024-08"]["rows"] == 1


def test_connections_are_independent(emu, client):
    client.create(body([row(cost="1")]), conn="a")
    client.create(body([row(cost="2")], operation="replace_drop"), conn="b")
    assert month_costs(emu, conn="a") == ["1"] and month_costs(emu, conn="b") == ["2"]


def test_costs_are_summed_exactly(emu, client):
    client.create(body([row(cost="0.1")] * 10 + [row(cost="12345678901234567890.000000001")]))
    assert emu.totals()["c1"]["2024-08"]["cost"] == Decimal("12345678901234567891.000000001")


# ---------------------------------------------------------------------------------------------
# monthly limits
# ---------------------------------------------------------------------------------------------

def test_monthly_row_limit(monkeypatch, emu, client):
    monkeypatch.setattr(store_module, "MONTH_ROW_LIMIT", 5)
    assert client.create(body([row()] * 3)).status_code == 200
    response = client.create(body([row()] * 3))
    assert response.status_code == 400
    assert "6 rows" in error_message(response) and "limit of 5" in error_message(response)
    assert emu.totals()["c1"]["2024-08"] == {"rows": 3, "cost": Decimal(3), "bodies": 1}
    # replace_drop with exactly the limit is fine; a failed first drop creates nothing
    assert client.create(body([row()] * 5, operation="replace_drop")).status_code == 200
    assert client.create(body([row()] * 6), conn="other").status_code == 400
    assert "other" not in emu.totals()


def test_monthly_byte_limit(monkeypatch, emu, client):
    one_row_bytes = len(json.dumps(row(), separators=(",", ":")).encode())
    monkeypatch.setattr(store_module, "MONTH_BYTE_LIMIT", one_row_bytes * 2)
    assert client.create(body([row()] * 2)).status_code == 200
    response = client.create(body([row()]))
    assert response.status_code == 400 and "bytes" in error_message(response)
    assert emu.totals()["c1"]["2024-08"]["rows"] == 2


# ---------------------------------------------------------------------------------------------
# idempotency
# ---------------------------------------------------------------------------------------------

def test_idempotent_replay_does_not_apply_twice(emu, client):
    payload = body([row(cost="4")])
    first = client.create(payload, cloudzero_idempotency_key="k1")
    second = client.create(payload, cloudzero_idempotency_key="k1")
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert emu.applied_drops == 1 and emu.post_count == 2
    assert emu.stats()["idempotent_replays"] == 1
    assert emu.totals()["c1"]["2024-08"]["rows"] == 1
    assert [r.idempotency_key for r in emu.requests] == ["k1", "k1"]


def test_error_responses_are_remembered(emu, client):
    bad = client.create(body([row(cost="x")]), cloudzero_idempotency_key="k2")
    again = client.create(body([row(cost="1")]), cloudzero_idempotency_key="k2")
    assert bad.status_code == again.status_code == 400 and bad.content == again.content
    assert emu.applied_drops == 0
    assert emu.stats()["idempotency_key_mismatches"] == 1


def test_forgotten_keys_apply_again(emu, client):
    payload = body([row()])
    client.create(payload, cloudzero_idempotency_key="k3")
    emu.forget_idempotency_keys()
    client.create(payload, cloudzero_idempotency_key="k3")
    assert emu.applied_drops == 2 and emu.totals()["c1"]["2024-08"]["rows"] == 2


def test_requests_without_or_with_different_keys_apply(emu, client):
    client.create(body([row()]))
    client.create(body([row()]))
    client.create(body([row()]), cloudzero_idempotency_key="a")
    client.create(body([row()]), cloudzero_idempotency_key="b")
    assert emu.applied_drops == 4


# ---------------------------------------------------------------------------------------------
# test-key namespaces
# ---------------------------------------------------------------------------------------------

def test_test_key_uses_a_separate_namespace(emu, client):
    client.create(body([row(cost="1")]))
    client.create(body([row(cost="50")], operation="replace_drop"), cloudzero_test_key="t1")
    assert emu.totals()["c1"]["2024-08"]["cost"] == Decimal("1")
    assert emu.totals(namespace="t1")["c1"]["2024-08"]["cost"] == Decimal("50")
    assert month_costs(emu) == ["1"]
    assert [r["cost/cost"] for r in emu.rows("c1", "2024-08", namespace="t1")] == ["50"]
    assert client.month("2024-08", cloudzero_test_key="t1").json()["billing_drop"][0][
        "cost/cost"] == "50"
    assert client.month("2024-08", cloudzero_test_key="t2").status_code == 404
    assert len(client.list(cloudzero_test_key="t1").json()["billing_drops"]) == 1
    assert emu.stats()["namespaces"]["t1"]["c1"]["2024-08"]["cost"] == "50"


def test_idempotency_keys_are_per_namespace(emu, client):
    client.create(body([row()]), cloudzero_idempotency_key="same")
    client.create(body([row()]), cloudzero_idempotency_key="same", cloudzero_test_key="t")
    assert emu.applied_drops == 2


# ---------------------------------------------------------------------------------------------
# concurrency
# ---------------------------------------------------------------------------------------------

def run_together(calls) -> list:
    """Start the calls at the same moment on separate threads/sessions; return the results."""
    barrier = threading.Barrier(len(calls))
    results = [None] * len(calls)

    def run(index, call):
        barrier.wait()
        results[index] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


def test_concurrent_requests_on_one_connection_are_429(emu):
    emu.configure(latency_seconds=0.3)
    first, second = Client(emu), Client(emu)
    results = run_together([lambda: first.create(body([row()])),
                            lambda: second.list()])
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 429]
    rejected = next(r for r in results if r.status_code == 429)
    assert rejected.json() == {"message": "concurrent request for connection"}
    assert emu.concurrency_violations == 1


def test_different_connections_may_run_concurrently(emu):
    emu.configure(latency_seconds=0.2)
    clients = [Client(emu) for _ in range(3)]
    results = run_together([lambda c=c, i=i: c.create(body([row()]), conn=f"c{i}")
                            for i, c in enumerate(clients)])
    assert [r.status_code for r in results] == [200, 200, 200]
    assert emu.concurrency_violations == 0


def test_back_to_back_requests_are_not_violations(emu, client):
    for _ in range(50):
        assert client.create(body([row()])).status_code == 200
    # a fresh session each time: the slot is free as soon as the response is received
    for _ in range(20):
        assert Client(emu).list().status_code == 200
    assert emu.concurrency_violations == 0


def test_in_flight_window_covers_the_request_records(emu):
    emu.configure(latency_seconds=0.1)
    Client(emu).create(body([row()]))
    record = emu.requests[0]
    assert record.ended - record.started >= 0.1
    assert record.connection == "c1" and record.status == 200 and record.method == "POST"


# ---------------------------------------------------------------------------------------------
# faults
# ---------------------------------------------------------------------------------------------

def test_without_error_caching_a_scripted_5xx_leaves_the_key_usable():
    with Emulator(api_key=KEY, cache_errors=False,
                  faults=FaultConfig(script=["5xx", "ok"])) as emu:
        client = Client(emu)
        payload = body([row()])
        failed = client.create(payload, cloudzero_idempotency_key="r1")
        assert failed.status_code in (500, 502) and "Retry-After" not in failed.headers
        assert emu.applied_drops == 0
        retried = client.create(payload, cloudzero_idempotency_key="r1")
        assert retried.status_code == 200 and emu.applied_drops == 1
        assert [r.fault for r in emu.requests] == ["5xx", None]
        assert emu.stats()["cache_errors"] is False and emu.idempotent_replays == 0


def test_a_cached_503_is_replayed_to_every_retry_with_the_same_key(emu, client):
    emu.configure(faults=FaultConfig(script=["503_retry_after"], retry_after_5xx=2))
    payload = body([row(cost="5")])
    first = client.create(payload, cloudzero_idempotency_key="r1")
    retries = [client.create(payload, cloudzero_idempotency_key="r1") for _ in range(3)]
    assert first.status_code == 503 and first.headers["Retry-After"] == "2"
    for retry in retries:
        assert retry.status_code == 503 and retry.headers["Retry-After"] == "2"
        assert retry.content == first.content
    assert emu.applied_drops == 0 and emu.totals() == {}
    assert [(r.fault, r.replayed) for r in emu.requests] == [
        ("503_retry_after", False), (None, True), (None, True), (None, True)]
    stats = emu.stats()
    assert stats["cache_errors"] is True
    assert stats["idempotent_replays"] == stats["error_replays"] == 3
    # a new key reaches the application again
    assert client.create(payload, cloudzero_idempotency_key="r1-next").status_code == 200
    assert emu.applied_drops == 1


def test_a_cached_500_replays_even_to_a_different_body(emu, client):
    emu.configure(faults=FaultConfig(script=["5xx"]))
    first = client.create(body([row(cost="1")]), cloudzero_idempotency_key="k")
    other = client.create(body([row(cost="2")]), cloudzero_idempotency_key="k")
    assert first.status_code in (500, 502) and other.status_code == first.status_code
    assert emu.idempotency_key_mismatches == 1 and emu.applied_drops == 0


@pytest.mark.parametrize("faults,expected_status,expected_retry_after", [
    (FaultConfig(script=["front_5xx"], retry_after_front_5xx=0.5), {503}, "0.5"),
    (FaultConfig(script=["front_5xx"]), {502, 503, 504}, None),
    (FaultConfig(rate_front_5xx=1.0, retry_after_front_5xx=1), {503}, "1"),
])
def test_a_front_5xx_is_not_cached_and_the_retry_applies(emu, client, faults, expected_status,
                                                        expected_retry_after):
    emu.configure(faults=faults)
    payload = body([row(cost="7")])
    failed = client.create(payload, cloudzero_idempotency_key="f1")
    assert failed.status_code in expected_status
    assert failed.headers.get("Retry-After") == expected_retry_after
    assert emu.applied_drops == 0
    emu.configure(faults=FaultConfig())  # the load balancer recovers
    retried = client.create(payload, cloudzero_idempotency_key="f1")
    assert retried.status_code == 200 and emu.applied_drops == 1
    assert emu.totals()["c1"]["2024-08"]["cost"] == Decimal("7")
    assert [(r.fault, r.replayed) for r in emu.requests] == [("front_5xx", False), (None, False)]
    assert emu.idempotent_replays == 0


def test_an_application_fault_cannot_hit_a_request_whose_key_is_cached(emu, client):
    emu.configure(faults=FaultConfig(script=["ok", "5xx", "503_retry_after"]))
    statuses = [client.create(body([row()]), cloudzero_idempotency_key="s").status_code
                for _ in range(3)]
    assert statuses == [200, 200, 200] and emu.applied_drops == 1
    assert emu.stats()["faults_injected"] == {}


def test_a_front_fault_still_hits_a_request_whose_key_is_cached(emu, client):
    emu.configure(faults=FaultConfig(script=["ok", "front_5xx", "429", "ok"]))
    statuses = [client.create(body([row()]), cloudzero_idempotency_key="s").status_code
                for _ in range(4)]
    assert statuses[0] == 200 and statuses[1] in (502, 503, 504) and statuses[2:] == [429, 200]
    assert [r.replayed for r in emu.requests] == [False, False, False, True]


def _too_large(emu) -> dict:
    return body([row(cost="1", **{"lineitem/description": "x" * emu.max_body_bytes})])


@pytest.mark.parametrize("cache_errors", [True, False])
def test_413_and_403_are_cached_only_with_error_caching(cache_errors):
    with Emulator(api_key=KEY, cache_errors=cache_errors, max_body_bytes=2000) as emu:
        client = Client(emu)
        large = client.create(_too_large(emu), cloudzero_idempotency_key="big")
        small = client.create(body([row()]), cloudzero_idempotency_key="big")
        assert large.status_code == 413
        assert small.status_code == (413 if cache_errors else 200)
        emu.configure(faults=FaultConfig(forbid_after_drops=0))
        refused = client.create(body([row()]), cloudzero_idempotency_key="revoked")
        assert refused.status_code == 403 and emu.requests[-1].fault == "forbidden"
        emu.configure(faults=FaultConfig())
        again = client.create(body([row()]), cloudzero_idempotency_key="revoked")
        assert again.status_code == (403 if cache_errors else 200)
        assert emu.error_replays == (2 if cache_errors else 0)


def test_a_wrong_api_key_is_refused_without_touching_the_cache(emu, client):
    assert Client(emu, key="wrong").create(body([row()]),
                                           cloudzero_idempotency_key="w").status_code == 403
    assert client.create(body([row()]), cloudzero_idempotency_key="w").status_code == 200
    assert Client(emu, key="wrong").create(body([row()]),
                                           cloudzero_idempotency_key="w").status_code == 403
    assert emu.idempotent_replays == 0 and emu.applied_drops == 1


def test_a_bad_connection_id_is_a_cached_application_answer(emu, client):
    first = client.create(body([row()]), conn="bad.id", cloudzero_idempotency_key="b")
    again = client.create(body([row()]), conn="bad.id", cloudzero_idempotency_key="b")
    assert first.status_code == again.status_code == 400
    assert "connection_id" in error_message(again) and emu.error_replays == 1


def test_an_idempotency_key_is_scoped_to_its_path(emu, client):
    client.create(body([row()]), conn="c1", cloudzero_idempotency_key="same")
    client.create(body([row()]), conn="c2", cloudzero_idempotency_key="same")
    assert emu.applied_drops == 2 and emu.idempotent_replays == 0


def test_drop_after_apply_replays_the_cached_success(emu, client):
    emu.configure(faults=FaultConfig(script=["drop_after_apply", "drop_after_apply"]))
    payload = body([row(cost="3")])
    for _ in range(2):
        with pytest.raises(requests.exceptions.ConnectionError):
            client.create(payload, cloudzero_idempotency_key="d")
    replay = client.create(payload, cloudzero_idempotency_key="d")
    assert replay.status_code == 200 and emu.applied_drops == 1
    assert [(r.fault, r.replayed) for r in emu.requests] == [
        ("drop_after_apply", False), ("drop_after_apply", True), (None, True)]
    assert emu.error_replays == 0


@pytest.mark.parametrize("faults,expected_retry_after", [
    (FaultConfig(script=["503_retry_after"], retry_after_5xx=2), "2"),
    (FaultConfig(script=["5xx"], retry_after_5xx=0.25), "0.25"),
    (FaultConfig(rate_5xx=1.0, retry_after_5xx=1.5), "1.5"),
])
def test_503_carries_retry_after(emu, client, faults, expected_retry_after):
    emu.configure(faults=faults)
    response = client.create(body([row()]))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == expected_retry_after
    assert emu.applied_drops == 0 and emu.requests[0].fault == "503_retry_after"


def test_429_fault_has_retry_after_and_is_not_remembered(emu, client):
    emu.configure(faults=FaultConfig(script=["429"]))
    limited = client.create(body([row()]), cloudzero_idempotency_key="r2")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "0.05"
    assert emu.applied_drops == 0 and emu.concurrency_violations == 0
    assert client.create(body([row()]), cloudzero_idempotency_key="r2").status_code == 200
    assert emu.applied_drops == 1 and emu.stats()["idempotent_replays"] == 0


def test_slow_fault_applies_then_times_out(emu, client):
    emu.configure(faults=FaultConfig(script=["slow"], slow_seconds=0.6))
    payload = body([row(cost="3")])
    with pytest.raises(requests.exceptions.Timeout):
        client.create(payload, timeout=0.15, cloudzero_idempotency_key="r3")
    assert emu.applied_drops == 1  # applied before the sleep: the client cannot know
    wait_until(lambda: len(emu.requests) == 1)  # the slow request has left its window
    assert emu.requests[0].fault == "slow"
    replay = Client(emu).create(payload, cloudzero_idempotency_key="r3")
    assert replay.status_code == 200 and emu.applied_drops == 1
    assert emu.totals()["c1"]["2024-08"]["rows"] == 1


def test_retrying_during_a_slow_request_is_a_concurrency_violation(emu, client):
    emu.configure(faults=FaultConfig(script=["slow"], slow_seconds=0.5))
    with pytest.raises(requests.exceptions.Timeout):
        client.create(body([row()]), timeout=0.1)
    assert Client(emu).create(body([row()])).status_code == 429
    assert emu.concurrency_violations == 1


def test_drop_after_apply_closes_without_response(emu, client):
    emu.configure(faults=FaultConfig(script=["drop_after_apply"]))
    payload = body([row(cost="8")])
    with pytest.raises(requests.exceptions.ConnectionError):
        client.create(payload, cloudzero_idempotency_key="r4")
    assert emu.applied_drops == 1
    record = emu.requests[0]
    assert record.status == 0 and record.fault == "drop_after_apply"
    replay = client.create(payload, cloudzero_idempotency_key="r4")
    assert replay.status_code == 200 and replay.json()["connection"]["row_count"] == 1
    assert emu.applied_drops == 1 and emu.totals()["c1"]["2024-08"]["cost"] == Decimal("8")


def test_forbid_after_drops(emu, client):
    emu.configure(faults=FaultConfig(forbid_after_drops=1))
    assert client.create(body([row()])).status_code == 200
    assert client.create(body([row()])).status_code == 403
    assert client.list().status_code == 403
    assert emu.applied_drops == 1 and emu.requests[-1].fault == "forbidden"


def test_forbid_after_drops_holds_across_parallel_connections(emu):
    emu.configure(faults=FaultConfig(forbid_after_drops=1), latency_seconds=0.2)
    clients = [Client(emu) for _ in range(3)]
    results = run_together([lambda c=c, i=i: c.create(body([row()]), conn=f"p{i}")
                            for i, c in enumerate(clients)])
    assert sorted(r.status_code for r in results) == [200, 403, 403]
    assert emu.applied_drops == 1


def test_faults_apply_to_create_requests_only(emu, client):
    emu.configure(faults=FaultConfig(rate_5xx=1.0))
    assert client.list().status_code == 200
    assert client.month("2024-08").status_code == 404
    assert client.validate(body([row()])).status_code == 200
    assert client.create(body([row()])).status_code in (500, 502)


def fault_sequence(seed: int, n: int = 40) -> list[int]:
    faults = FaultConfig(rate_5xx=0.2, rate_429=0.2, retry_after_429=0)
    with Emulator(api_key=KEY, seed=seed, faults=faults) as emu:
        client = Client(emu)
        return [client.create(body([row()])).status_code for _ in range(n)]


def test_random_faults_are_reproducible():
    first, second = fault_sequence(7), fault_sequence(7)
    assert first == second
    assert {200, 429} <= set(first) and set(first) & {500, 502}
    assert fault_sequence(8) != first


def test_script_runs_before_random_faults(emu, client):
    emu.configure(faults=FaultConfig(script=["ok", "429"], rate_5xx=1.0))
    statuses = [client.create(body([row()])).status_code for _ in range(3)]
    assert statuses[:2] == [200, 429] and statuses[2] in (500, 502)


def test_fault_config_rejects_nonsense():
    with pytest.raises(ValueError):
        FaultConfig(rate_5xx=1.5)
    with pytest.raises(ValueError):
        FaultConfig(script=["explode"])
    with pytest.raises(ValueError):
        FaultConfig.from_dict({"rate_500": 0.1})


# ---------------------------------------------------------------------------------------------
# preloaded months: "a month already holding 990,000 rows", cheaply
# ---------------------------------------------------------------------------------------------

def test_preload_counts_towards_the_monthly_row_limit(emu, client):
    drop = emu.preload("c1", "2024-08", rows=999_998, cost="1000.25")
    assert drop["month"] == "2024-08" and drop["row_count"] == 999_998
    refused = client.create(body([row(cost="1")] * 3))
    assert refused.status_code == 400
    assert "would hold 1000001 rows, more than the limit of 1000000" in error_message(refused)
    assert client.create(body([row(cost="1")] * 2)).status_code == 200
    assert emu.totals()["c1"]["2024-08"] == {
        "rows": 1_000_000, "cost": Decimal("1002.25"), "bodies": 1}
    listed = client.list().json()["billing_drops"]
    assert [(d["month"], d["row_count"]) for d in listed] == [("2024-08", 999_998), ("2024-08", 2)]
    assert listed[0] == drop
    # counted, not kept: reading the month gives the rows that were sent
    assert emu.rows("c1", "2024-08") == [row(cost="1")] * 2
    assert client.month("2024-08").json() == {"billing_drop": [row(cost="1")] * 2}
    assert emu.applied_drops == 1 and emu.post_count == 2


def test_preload_is_replaced_like_any_other_rows(emu, client):
    emu.preload("c1", "2024-08", rows=500, cost="5")
    client.create(body([row("2024-08-01T00:30:00Z", cost="1")], operation="replace_hourly"))
    assert emu.totals()["c1"]["2024-08"]["rows"] == 1  # the preload sits in the first hour
    emu.preload("c1", "2024-09", rows=500, cost="5")
    client.create(body([row("2024-09-20T00:00:00Z", cost="2")], month="2024-09",
                       operation="replace_hourly"))
    assert emu.totals()["c1"]["2024-09"]["rows"] == 501
    client.create(body([row("2024-09-20T00:00:00Z", cost="2")], month="2024-09",
                       operation="replace_drop"))
    assert emu.totals()["c1"]["2024-09"] == {"rows": 1, "cost": Decimal("2"), "bodies": 2}


def test_preload_in_throughput_mode_and_in_a_test_namespace(fast_emu):
    fast_emu.preload("c1", "2024-08", rows=990_000, cost="-3.5", namespace="t")
    assert fast_emu.totals() == {}
    assert fast_emu.totals("t") == {"c1": {"2024-08": {"rows": 990_000, "cost": Decimal("-3.5"),
                                                        "bodies": 0}}}
    assert fast_emu.drops("c1", namespace="t")[0]["row_count"] == 990_000


@pytest.mark.parametrize("args,words", [
    (("c1", "2024-13", 5), "month must be YYYY-MM"),
    (("bad id", "2024-08", 5), "connection must match"),
    (("c1", "2024-08", 0), "rows must be a whole number"),
    (("c1", "2024-08", 5, 1.5), "cost must be a decimal number as text"),
    (("c1", "2024-08", 5, "1e999999999999"), "cost must be a decimal number as text"),
    (("c1", "2024-08", 1_000_001), "more than the limit of 1000000"),
])
def test_preload_refuses_nonsense(emu, args, words):
    with pytest.raises(ValueError, match=words):
        emu.preload(*args)
    assert emu.totals() == {}


def test_preload_respects_a_patched_row_limit(monkeypatch, emu):
    monkeypatch.setattr(store_module, "MONTH_ROW_LIMIT", 10)
    emu.preload("c1", "2024-08", rows=10)
    with pytest.raises(ValueError, match="would hold 11 rows"):
        emu.preload("c1", "2024-08", rows=1)


def test_preload_control_endpoint(emu, client):
    url = f"{emu.url}/_emulator/preload"
    loaded = requests.post(url, json={"connection": "c1", "month": "2024-08", "rows": 990_000,
                                      "cost": "12.5"}, timeout=5)
    assert loaded.ok and loaded.json()["drop"]["row_count"] == 990_000
    assert client.list().json()["billing_drops"] == [loaded.json()["drop"]]
    for bad in ({"connection": "c1", "month": "2024-08"}, {"rows": 1, "colour": "red"},
                {"connection": "c1", "month": "2024-08", "rows": 20_000}):
        refused = requests.post(url, json=bad, timeout=5)
        assert refused.status_code == 400 and error_message(refused).startswith("bad preload")
    assert emu.totals()["c1"]["2024-08"]["rows"] == 990_000


# ---------------------------------------------------------------------------------------------
# throughput mode
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def fast_emu():
    with Emulator(api_key=KEY, mode="throughput") as running:
        yield running


def test_throughput_mode_counts_rows_and_exact_cost(fast_emu):
    client = Client(fast_emu)
    rows = [row(start=f"2024-08-{1 + i % 28:02d}T{i % 24:02d}:00:00Z", cost=f"{i}.01")
            for i in range(30_000)]
    for start in range(0, len(rows), 10_000):
        assert client.create(body(rows[start:start + 10_000])).status_code == 200
    expected = sum(Decimal(r["cost/cost"]) for r in rows)
    assert fast_emu.totals() == {"c1": {"2024-08": {"rows": 30_000, "cost": expected,
                                                    "bodies": 3}}}
    assert fast_emu.rows("c1", "2024-08") == []
    assert fast_emu.stats()["totals"]["c1"]["2024-08"]["cost"] == str(expected)


def test_throughput_mode_operations(fast_emu):
    client = Client(fast_emu)
    client.create(body([row(start="2024-08-16T13:00:00Z", cost="1"),
                        row(start="2024-08-16T14:00:00Z", cost="2")]))
    client.create(body([row(start="2024-08-16T15:00:00+02:00", cost="10")],
                       operation="replace_hourly"))
    assert fast_emu.totals()["c1"]["2024-08"]["cost"] == Decimal("12")
    assert fast_emu.totals()["c1"]["2024-08"]["rows"] == 2
    client.create(body([row(cost="5")], operation="replace_drop"))
    assert fast_emu.totals()["c1"]["2024-08"] == {"rows": 1, "cost": Decimal(5), "bodies": 3}


def test_throughput_mode_still_checks_auth_size_and_shape(fast_emu):
    client = Client(fast_emu)
    assert Client(fast_emu, key="nope").create(body([row()])).status_code == 403
    assert client.create({"month": "August", "data": []}).status_code == 400
    assert client.create(body([row()], operation="merge")).status_code == 400
    assert client.create(body([{"cost/cost": "1"}])).status_code == 400
    assert client.create(body([row(cost="NaN")])).status_code == 400
    assert client.create_raw(b" " * 5_000_001).status_code == 413
    assert fast_emu.applied_drops == 0


def test_throughput_mode_row_limit(monkeypatch, fast_emu):
    monkeypatch.setattr(store_module, "MONTH_ROW_LIMIT", 4)
    client = Client(fast_emu)
    assert client.create(body([row()] * 4)).status_code == 200
    assert client.create(body([row()])).status_code == 400
    assert fast_emu.totals()["c1"]["2024-08"]["rows"] == 4


def test_throughput_mode_read_month_is_not_supported(fast_emu):
    client = Client(fast_emu)
    client.create(body([row()]))
    assert client.month("2024-08").status_code == 501


# ---------------------------------------------------------------------------------------------
# state management, control endpoints, lifecycle
# ---------------------------------------------------------------------------------------------

def test_stats_is_json_and_reset_clears_everything(emu, client):
    emu.configure(faults=FaultConfig(script=["429"]))
    client.create(body([row()]), cloudzero_idempotency_key="z")
    client.create(body([row(cost="2.50")]), cloudzero_idempotency_key="z")
    client.create(body([row(cost="2.50")]), cloudzero_idempotency_key="z")
    stats = json.loads(json.dumps(emu.stats()))
    assert stats["post_count"] == 3 and stats["applied_drops"] == 1
    assert stats["idempotent_replays"] == 1 and stats["faults_injected"] == {"429": 1}
    assert stats["status_counts"] == {"429": 1, "200": 2}
    assert stats["totals"] == {"c1": {"2024-08": {"rows": 1, "cost": "2.50", "bodies": 1}}}
    emu.reset()
    assert emu.totals() == {} and emu.requests == [] and emu.post_count == 0
    assert emu.applied_drops == 0 and emu.max_body_bytes_seen == 0
    # keys are forgotten and the script is re-armed
    assert client.create(body([row()]), cloudzero_idempotency_key="z").status_code == 429
    assert client.create(body([row()]), cloudzero_idempotency_key="z").status_code == 200


def test_control_endpoints(emu, client):
    client.create(body([row()]), cloudzero_idempotency_key="c")
    stats = requests.get(f"{emu.url}/_emulator/stats", timeout=5).json()
    assert stats["applied_drops"] == 1
    assert requests.post(f"{emu.url}/_emulator/forget_keys", timeout=5).ok
    client.create(body([row()]), cloudzero_idempotency_key="c")
    assert emu.applied_drops == 2
    configured = requests.post(f"{emu.url}/_emulator/configure", timeout=5, json={
        "faults": {"script": ["429"]}, "latency_seconds": 0.01})
    assert configured.ok and emu.latency_seconds == 0.01
    assert client.create(body([row()])).status_code == 429
    bad = requests.post(f"{emu.url}/_emulator/configure", json={"faults": {"x": 1}}, timeout=5)
    assert bad.status_code == 400
    assert requests.post(f"{emu.url}/_emulator/reset", timeout=5).ok
    assert emu.totals() == {} and emu.requests == []


def test_configure_endpoint_switches_error_caching(emu, client):
    def configure(settings):
        return requests.post(f"{emu.url}/_emulator/configure", json=settings, timeout=5)

    assert requests.get(f"{emu.url}/_emulator/stats", timeout=5).json()["cache_errors"] is True
    assert configure({"cache_errors": False, "faults": {"script": ["5xx"]}}).ok
    assert requests.get(f"{emu.url}/_emulator/stats", timeout=5).json()["cache_errors"] is False
    assert client.create(body([row()]), cloudzero_idempotency_key="x").status_code in (500, 502)
    assert client.create(body([row()]), cloudzero_idempotency_key="x").status_code == 200
    assert configure({"cache_errors": True, "faults": {"script": ["5xx"]}}).ok
    assert client.create(body([row()]), cloudzero_idempotency_key="y").status_code in (500, 502)
    assert client.create(body([row()]), cloudzero_idempotency_key="y").status_code in (500, 502)
    for nonsense in ("false", 0, None):
        refused = configure({"cache_errors": nonsense})
        assert refused.status_code == 400 and "cache_errors" in error_message(refused)
    assert emu.cache_errors is True


def test_stop_is_quick_with_idle_and_sleeping_connections():
    emu = Emulator(api_key=KEY, latency_seconds=5).start()
    idle = Client(emu)
    idle.session.get(f"{emu.url}/_emulator/stats")  # leaves a keep-alive connection open
    sleeper = threading.Thread(target=lambda: _ignore_errors(
        lambda: Client(emu).create(body([row()]), timeout=10)))
    sleeper.start()
    wait_until(lambda: emu.max_body_bytes_seen > 0)
    started = time.monotonic()
    emu.stop()
    assert time.monotonic() - started < 1.0
    sleeper.join(5)
    assert not sleeper.is_alive()


def _ignore_errors(call) -> None:
    try:
        call()
    except requests.RequestException:
        pass


@contextlib.contextmanager
def emulator_process(tmp_path, *args: str):
    """`python -m anycost_emulator` on a free port: yields (url, the line it printed)."""
    port_file = tmp_path / "port"
    env = {**os.environ, "CLOUDZERO_API_KEY": KEY, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "anycost_emulator", "--port", "0", "--port_file", str(port_file),
         *args], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        line = process.stdout.readline().strip()
        yield f"http://127.0.0.1:{int(port_file.read_text())}", line
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def post_drop(url: str, payload: dict, **headers: str) -> requests.Response:
    return requests.post(f"{url}/v2/connections/billing/anycost/c1/billing_drops", json=payload,
                         headers={"Authorization": KEY, **headers}, timeout=5)


def test_cli_subprocess(tmp_path):
    with emulator_process(tmp_path, "--faults", '{"script": ["ok"]}') as (url, line):
        assert line == f"AnyCost emulator listening on {url}"
        assert post_drop(url, body([row(cost="2")])).status_code == 200
        stats = requests.get(f"{url}/_emulator/stats", timeout=5).json()
        assert stats["applied_drops"] == 1 and stats["cache_errors"] is True
        assert stats["totals"] == {"c1": {"2024-08": {"rows": 1, "cost": "2", "bodies": 1}}}


@pytest.mark.parametrize("flag,cached", [("true", True), ("false", False), ("FALSE", False)])
def test_cli_cache_errors_flag(tmp_path, flag, cached):
    faults = '{"script": ["503_retry_after"], "retry_after_5xx": 0.01}'
    with emulator_process(tmp_path, "--cache_errors", flag, "--faults", faults) as (url, _):
        key = {"cloudzero-idempotency-key": "k"}
        assert post_drop(url, body([row()]), **key).status_code == 503
        assert post_drop(url, body([row()]), **key).status_code == (503 if cached else 200)
        stats = requests.get(f"{url}/_emulator/stats", timeout=5).json()
        assert stats["cache_errors"] is cached and stats["error_replays"] == int(cached)


def test_cli_rejects_a_cache_errors_value_that_is_not_true_or_false():
    result = subprocess.run(
        [sys.executable, "-m", "anycost_emulator", "--port", "0", "--cache-errors", "maybe"],
        cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True, text=True, timeout=10)
    assert result.returncode == 2 and "expected true or false, got 'maybe'" in result.stderr


def test_cli_without_key_exits_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MISSING_KEY_VAR"}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "anycost_emulator", "--port", "0", "--api_key_env",
         "MISSING_KEY_VAR"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=10)
    assert result.returncode == 2
    assert "MISSING_KEY_VAR" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_help_describes_every_option_the_control_endpoints_and_an_example():
    result = subprocess.run([sys.executable, "-m", "anycost_emulator", "--help"], cwd=PROJECT_ROOT,
                            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines to the terminal's width
    actions = [a for a in cli.parser()._actions if a.dest != "help"]
    assert {a.dest for a in actions} >= {"port", "mode", "faults", "cache_errors", "port_file"}
    for action in actions:
        assert action.option_strings[0] in text
        assert f"{action.option_strings[0]} " in text and action.help
    assert text.count("(default: ") == len(actions)
    assert "(default: true)" in text and "(default: CLOUDZERO_API_KEY)" in text
    for endpoint in ("stats", "configure", "reset", "forget_keys", "preload"):
        assert f"/_emulator/{endpoint}" in text
    for spec in dataclasses.fields(FaultConfig):
        assert spec.name in text
    for name in ("5xx", "503_retry_after", "front_5xx", "429", "slow", "drop_after_apply"):
        assert f" {name}" in text
    assert "example:" in text and "python -m anycost_emulator --port 8787" in text


def test_stats_module_prints_a_running_emulators_totals(emu, client):
    client.create(body([row(cost="2.50")]))
    assert client.create(body([row("2024-09-01T00:00:00Z", cost="1")], month="2024-09"),
                         conn="c2").status_code == 200
    result = subprocess.run([sys.executable, "-m", "anycost_emulator.stats", emu.url],
                            cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines[0] == ["stream", "month", "rows", "drops", "cost"]
    assert lines[1:3] == [["c1", "2024-08", "1", "1", "2.50"], ["c2", "2024-09", "1", "1", "1"]]
    assert lines[3] == ["concurrency", "violations:", "0"]


def test_requests_leave_no_access_log_on_the_terminal(emu, client, capsys):
    client.create(body([row()]))
    client.list()
    requests.get(f"{emu.url}/_emulator/stats", timeout=5)
    assert capsys.readouterr() == ("", "")


def _imports(module_path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(module_path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", ["rules", "store", "faults", "keys", "wire", "jsoncodec"])
def test_the_rules_the_store_and_the_faults_need_no_http(module):
    """One job per module: the CBF rules, the stored data, the key cache and the fault draws
    are usable (and testable) without the HTTP server or the emulator around them."""
    imported = _imports(PROJECT_ROOT / "anycost_emulator" / f"{module}.py")
    assert imported, "the module imports something (the check reads the right file)"
    forbidden = {"http.server", "socket", "socketserver",
                 "anycost_emulator.server", "anycost_emulator.emulator", "anycost_emulator.cli"}
    assert not imported & forbidden


def test_cli_on_a_port_in_use_says_so_in_one_line_and_exits_non_zero():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "anycost_emulator", "--port", str(port)], cwd=PROJECT_ROOT,
                                env={**os.environ, "CLOUDZERO_API_KEY": KEY, "PYTHONPATH": str(PROJECT_ROOT)},
                                capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == (f"anycost emulator: cannot listen on 127.0.0.1:{port}: Address already in use; "
                                     "stop what uses it, or give another --port (0 picks a free one)")
