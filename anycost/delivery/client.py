"""HTTP only: one request to the AnyCost Stream API, turned into an `Outcome`.

No retries and no ordering here (see `anycost.delivery.retry` and `anycost.delivery`); this class
only knows URLs, headers and how to read CloudZero's answers. TLS verification is always
on (`REQUESTS_CA_BUNDLE` may name the CA bundle to verify with). Only a validated
connection id ever reaches a URL path.

A failure without an answer is classified by whether any byte of the request went out:
the connections below mark the moment they first write to the socket. A refused or timed
out connect, a DNS failure and a TLS handshake failure send nothing, so the drop cannot
have been applied; a read timeout or a broken connection after that moment may have
applied it. (urllib3 reports a TLS handshake timeout as a read timeout; the mark tells
them apart.)
"""
import errno
import ipaddress
import json
import logging
import os
import socket
import ssl
import threading
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from anycost import cbf
from anycost.config import is_loopback, url_problem  # noqa: F401 (url_problem is part of this module's face)
from anycost.delivery import retry
from anycost.delivery.retry import Outcome

LOG = logging.getLogger("cloudzero.client")

API_PREFIX = "/v2/connections/billing/anycost"




_WIRE = threading.local()  # .sent: whether the current request wrote anything to the socket


class _MarkingHTTPConnection(urllib3.connection.HTTPConnection):
    def send(self, data):
        if self.sock is None:  # http.client connects lazily here; a failure sends nothing
            self.connect()
        _WIRE.sent = True
        super().send(data)


class _MarkingHTTPSConnection(urllib3.connection.HTTPSConnection):
    def send(self, data):  # the TLS handshake happened before (urllib3 validates first)
        if self.sock is None:
            self.connect()
        _WIRE.sent = True
        super().send(data)


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _MarkingHTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _MarkingHTTPSConnection


class _MarkingAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


class AnyCostClient:
    """Speaks to the billing-drop endpoints with one pooled session."""

    def __init__(self, api_url, api_key, connect_timeout=10.0, read_timeout=30.0, test_key=None):
        problem = url_problem(api_url)
        if problem:
            raise ValueError(problem)
        self._base = api_url.rstrip("/") + API_PREFIX
        self._host = urlsplit(api_url).hostname
        self._timeout = (connect_timeout, read_timeout)
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy or netrc surprises; verification stays on
        self._session.mount("http://", _MarkingAdapter())
        self._session.mount("https://", _MarkingAdapter())
        self._verify = os.environ.get("REQUESTS_CA_BUNDLE") or True
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

    def list_drops(self, connection_id) -> Outcome:
        """`GET .../billing_drops`: every drop of the connection, with its month and row_count."""
        return self._call("GET", f"{_connection_path(connection_id)}/billing_drops", None, {})

    def read_month(self, connection_id, month) -> Outcome:
        if not (len(month) == 7 and month[4] == "-" and month.replace("-", "").isdigit()):
            raise ValueError(f"month {month!r} is not YYYY-MM")
        return self._call("GET", f"{_connection_path(connection_id)}/billing_drops/{month}", None, {})

    def _call(self, method, path, body, headers) -> Outcome:
        _WIRE.sent = False
        try:
            response = self._session.request(method, self._base + path, data=body, headers=headers,
                                             timeout=self._timeout, verify=self._verify, allow_redirects=False)
        except requests.RequestException as err:
            LOG.debug("%s %s: %s", method, path, self._redact(str(err)))  # the library's full text
            return self._failure(err, bool(getattr(_WIRE, "sent", True)))
        payload = _json_or_none(response)
        message = "" if response.ok else self._redact(_server_message(payload, response))
        return Outcome(status=response.status_code, retry_after=response.headers.get("Retry-After"),
                       message=message, payload=payload)

    def _failure(self, err, sent) -> Outcome:
        """An Outcome with the kind of failure and a short description of our own."""
        connect_timeout, read_timeout = self._timeout
        if sent:
            if isinstance(err, requests.Timeout):
                return Outcome(error=retry.TIMEOUT, message=f"within --read_timeout {read_timeout:g} s")
            return Outcome(error=retry.CONNECTION, message=_cause_text(err))
        if isinstance(err, requests.exceptions.SSLError):
            verify_error = _find_cause(err, ssl.SSLCertVerificationError)
            if verify_error is not None:
                detail = getattr(verify_error, "verify_message", "") or "certificate verify failed"
                return Outcome(error=retry.TLS_CERTIFICATE, message=f"{self._host}: {detail}")
            return Outcome(error=retry.TLS_HANDSHAKE, message=f"{self._host}: {_cause_text(err)}")
        if isinstance(err, requests.exceptions.ConnectTimeout):
            return Outcome(error=retry.CONNECT, message=f"no connection to {self._host} within "
                                                         f"--connect_timeout {connect_timeout:g} s")
        if isinstance(err, requests.Timeout):  # a timeout before anything was sent: the TLS handshake
            return Outcome(error=retry.TLS_HANDSHAKE, message=f"{self._host}: no handshake within "
                                                               f"--connect_timeout {connect_timeout:g} s")
        if (_find_cause(err, socket.gaierror) is not None
                or _find_cause(err, urllib3.exceptions.NameResolutionError) is not None):
            return Outcome(error=retry.DNS, message=f"{self._host}")
        return Outcome(error=retry.CONNECT, message=f"{self._host}: {_cause_text(err)}")

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


def _causes(err):
    """The error and everything it wraps (causes, contexts, urllib3's `reason` and args)."""
    seen, stack = set(), [err]
    while stack:
        err = stack.pop(0)
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        yield err
        inner = [a for a in getattr(err, "args", ()) if isinstance(a, BaseException)]
        reason = getattr(err, "reason", None)
        stack += inner + [reason if isinstance(reason, BaseException) else None, err.__cause__, err.__context__]


def _find_cause(err, kind):
    return next((cause for cause in _causes(err) if isinstance(cause, kind)), None)


def _cause_text(err):
    """A few words for the innermost cause: the OS's words for an errno, else its class name
    (never the library's long text, which repeats the URL and the pool)."""
    for cause in _causes(err):
        code = getattr(cause, "errno", None)
        if isinstance(code, int) and code in errno.errorcode:
            return os.strerror(code).lower()
    for cause in reversed(list(_causes(err))):
        if isinstance(cause, ssl.SSLError) and getattr(cause, "reason", None):
            return f"TLS {cause.reason}"
    innermost = list(_causes(err))[-1]
    return {"RemoteDisconnected": "closed without an answer",
            "ProtocolError": "closed without an answer"}.get(type(innermost).__name__, type(innermost).__name__)
