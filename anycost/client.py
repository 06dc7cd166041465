"""HTTP only: one request to the AnyCost Stream API, turned into an `Outcome`.

No retries and no ordering here (see `anycost.retry` and `anycost.delivery`); this class
only knows URLs, headers and how to read CloudZero's answers. TLS verification is always
on. Only a validated connection id ever reaches a URL path.
"""
import ipaddress
import json
from urllib.parse import urlsplit

import requests

from anycost import cbf
from anycost.retry import Outcome

API_PREFIX = "/v2/connections/billing/anycost"


def url_problem(api_url):
    """Why `api_url` is refused, or None: https is required unless the host is loopback."""
    parts = urlsplit(api_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"--api_url {api_url!r} is not an http(s) URL"
    if parts.scheme == "https" or is_loopback(parts.hostname):
        return None
    return f"--api_url must use https:// (plain http is allowed only for a loopback host), not {api_url!r}"


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AnyCostClient:
    """Speaks to the four billing-drop endpoints with one pooled session."""

    def __init__(self, api_url, api_key, connect_timeout=10.0, read_timeout=300.0, test_key=None):
        problem = url_problem(api_url)
        if problem:
            raise ValueError(problem)
        self._base = api_url.rstrip("/") + API_PREFIX
        self._timeout = (connect_timeout, read_timeout)
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy or netrc surprises; verification stays on
        self._secret = api_key.reveal()
        self._session.headers.update({"Authorization": self._secret, "Content-Type": "application/json"})
        if test_key:
            self._session.headers["cloudzero-test-key"] = test_key

    def close(self):
        self._session.close()

    def create_drop(self, connection_id, body, idempotency_key) -> Outcome:
        return self._call("POST", f"{_connection_path(connection_id)}/billing_drops", body,
                          {"cloudzero-idempotency-key": idempotency_key})

    def validate_drop(self, body) -> Outcome:
        return self._call("POST", "/validate_billing_drop", body, {})

    def read_month(self, connection_id, month) -> Outcome:
        if not (len(month) == 7 and month[4] == "-" and month.replace("-", "").isdigit()):
            raise ValueError(f"month {month!r} is not YYYY-MM")
        return self._call("GET", f"{_connection_path(connection_id)}/billing_drops/{month}", None, {})

    def _call(self, method, path, body, headers) -> Outcome:
        try:
            response = self._session.request(method, self._base + path, data=body, headers=headers,
                                             timeout=self._timeout, verify=True, allow_redirects=False)
        except requests.Timeout as err:
            return Outcome(error="timeout", message=self._redact(_error_text(err)))
        except requests.ConnectionError as err:
            return Outcome(error="connection", message=self._redact(_error_text(err)))
        payload = _json_or_none(response)
        message = "" if response.ok else self._redact(_server_message(payload, response))
        return Outcome(status=response.status_code, retry_after=response.headers.get("Retry-After"),
                       message=message, payload=payload)

    def _redact(self, text):
        """A server that echoed the key back must not put it into our logs and report."""
        return text.replace(self._secret, "<api key>") if self._secret else text


def _connection_path(connection_id):
    if not cbf.is_valid_connection_id(connection_id):
        raise ValueError(f"connection id {connection_id!r} is not allowed in a URL ({cbf.CONNECTION_ID_RULE})")
    return "/" + connection_id


def _json_or_none(response):
    try:
        return response.json()
    except ValueError:
        return None


def _server_message(payload, response):
    """CloudZero's error text: `{"message"}` or `{"error": {"message"}}`, else the raw body."""
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:1000]
        if payload.get("message"):
            return str(payload["message"])[:1000]
        return json.dumps(payload)[:1000]
    return response.text[:300]


def _error_text(err):
    """The exception's first line, without any header values (requests never puts them there)."""
    return str(err).splitlines()[0][:300] if str(err) else type(err).__name__
