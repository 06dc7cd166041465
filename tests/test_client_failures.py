"""anycost.delivery.client against real sockets on 127.0.0.1: each way a request can fail is told apart.

Whether the drop may have been applied depends on whether the request went out, so the
classes matter for money: nothing sent (refused connect, DNS, TLS handshake, certificate)
versus sent and unanswered (read timeout, connection broken after sending).
"""
import datetime as dt
import http.server
import ipaddress
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from anycost.delivery import retry
from anycost.delivery.api_key import ApiKey
from anycost.delivery.client import AnyCostClient
from anycost.delivery.retry import RetryPolicy, explain

KEY = "k-client-failure-test"


def _client(url, connect_timeout=2.0, read_timeout=0.5):
    return AnyCostClient(url, ApiKey(KEY), connect_timeout=connect_timeout, read_timeout=read_timeout)


def _post(url, **timeouts):
    client = _client(url, **timeouts)
    try:
        return client.create_drop("conn", b'{"month":"2024-08","operation":"sum","data":[]}', "key-0")
    finally:
        client.close()


@pytest.fixture
def silent_listener():
    """A socket that listens but never accepts: the kernel completes TCP, nobody answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def closed_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connects are refused
    return port


def _serve_once(handle):
    """A thread that accepts one connection on 127.0.0.1 and gives it to `handle`."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def run():
        conn, _ = server.accept()
        try:
            handle(conn)
        finally:
            conn.close()
            server.close()
    threading.Thread(target=run, daemon=True).start()
    return server.getsockname()[1]


def _read_request(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length")][0])
    while len(rest) < length:
        rest += conn.recv(65536)
    return head


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.fixture
def tls_server(tmp_path):
    """An https server on 127.0.0.1 with a self-signed certificate: every POST gets 201."""
    cert, key = _self_signed(tmp_path)

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b'{"connection": {"drop_id": "d-tls"}}'
            self.send_response(201)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()


def test_a_refused_connection_sent_nothing_and_is_retried(closed_port):
    outcome = _post(f"http://127.0.0.1:{closed_port}")
    assert outcome.error == retry.CONNECT and not outcome.may_have_been_applied
    assert RetryPolicy.is_retryable(outcome)
    text = explain(outcome)
    assert text == "could not connect (127.0.0.1: connection refused); nothing was sent"


def test_no_answer_after_sending_may_have_been_applied(silent_listener):
    outcome = _post(f"http://127.0.0.1:{silent_listener}", read_timeout=0.3)
    assert outcome.error == retry.TIMEOUT and outcome.may_have_been_applied
    assert explain(outcome) == ("no answer (within --read_timeout 0.3 s) after the request was sent; "
                                "it may have been applied")


def test_a_tls_handshake_timeout_sent_nothing(silent_listener):
    # urllib3 reports this as a read timeout; nothing of the request went out, though.
    outcome = _post(f"https://127.0.0.1:{silent_listener}", connect_timeout=0.3, read_timeout=5)
    assert outcome.error == retry.TLS_HANDSHAKE and not outcome.may_have_been_applied
    assert RetryPolicy.is_retryable(outcome)
    assert "may have been applied" not in explain(outcome)
    assert "no handshake within --connect_timeout 0.3 s" in explain(outcome)


def test_a_connection_reset_after_the_request_may_have_been_applied():
    def reset_after_reading(conn):
        _read_request(conn)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    port = _serve_once(reset_after_reading)
    outcome = _post(f"http://127.0.0.1:{port}")
    assert outcome.error == retry.CONNECTION and outcome.may_have_been_applied
    assert explain(outcome).startswith("the connection broke (")
    assert explain(outcome).endswith("after the request was sent; it may have been applied")


def test_a_self_signed_certificate_is_not_retried_and_says_what_to_do(tls_server, monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    url, _ = tls_server
    outcome = _post(url)
    assert outcome.error == retry.TLS_CERTIFICATE and not outcome.may_have_been_applied
    decision = RetryPolicy().decide(1, 0.0, outcome, now=0.0)
    assert not decision.retry
    assert "self-signed certificate" in decision.reason and "REQUESTS_CA_BUNDLE" in decision.reason
    assert "nothing was sent" in decision.reason and len(decision.reason) < 300


def test_requests_ca_bundle_makes_a_private_ca_trusted(tls_server, monkeypatch):
    url, cert = tls_server
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert)
    outcome = _post(url)
    assert outcome.ok and outcome.payload == {"connection": {"drop_id": "d-tls"}}


def test_an_unresolvable_host_name_points_at_api_url():
    outcome = _post("https://nonexistent.invalid")  # .invalid never resolves, without any network
    assert outcome.error == retry.DNS and not outcome.may_have_been_applied
    assert explain(outcome) == ("the host name did not resolve (nonexistent.invalid); nothing was sent. "
                                "Check --api_url")


def test_failure_text_is_short_and_never_the_librarys(closed_port, silent_listener):
    for outcome in (_post(f"http://127.0.0.1:{closed_port}"), _post(f"http://127.0.0.1:{silent_listener}"),
                    _post("https://nonexistent.invalid")):
        text = explain(outcome)
        assert len(text) < 160 and "HTTPConnectionPool" not in text and "Max retries" not in text
        assert "\n" not in text and KEY not in text


def test_list_drops_reads_the_connections_drops():
    answer = b'{"billing_drops": [{"drop_id": "a", "month": "2024-08", "row_count": 3}]}'

    def handle(conn):
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(65536)
        handle.request_line = head.split(b"\r\n")[0]
        handle.authorization = [line for line in head.split(b"\r\n") if line.lower().startswith(b"authorization")]
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (len(answer), answer))
    port = _serve_once(handle)
    client = _client(f"http://127.0.0.1:{port}")
    try:
        outcome = client.list_drops("conn-1")
    finally:
        client.close()
    assert outcome.ok and outcome.payload["billing_drops"][0]["row_count"] == 3
    assert handle.request_line == b"GET /v2/connections/billing/anycost/conn-1/billing_drops HTTP/1.1"
    assert handle.authorization == [b"Authorization: " + KEY.encode()]
