"""The pure handshake parsers, fed with the exact bytes real OpenSSL peers exchange."""

from __future__ import annotations

import ssl
import tracemalloc

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from inspector.findings import handshake as handshake_findings
from inspector.findings.tunnel import tunnel_findings
from inspector.lab.pki import make_cert
from inspector.observe import handshake, wire
from inspector.observe.handshake import HandshakeTracker
from inspector.records.record import Tunnel

from .handshakes import client_context, server_context
from .handshakes import handshake as run_handshake

HOST = "svc.lab.test"


@pytest.fixture(scope="module")
def certs():
    root = make_cert("Unit Root", ca=True)
    leaf = make_cert(HOST, root, sans=(HOST,))
    return root, leaf


def track(transcript, split: int | None = None) -> HandshakeTracker:
    tr = HandshakeTracker()
    for from_client, data in transcript.chunks:
        pieces = [data] if split is None else [data[i:i + split] for i in range(0, len(data), split)]
        for piece in pieces:
            if tr.feed(from_client, piece):
                return tr
    tr.closed()
    return tr


@pytest.mark.parametrize("version,expected", [
    (ssl.TLSVersion.TLSv1_3, "TLSv1.3"),
    (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
])
def test_established_reads_sni_alpn_and_version(certs, version, expected):
    root, leaf = certs
    t = run_handshake(client_context(root, max_version=version, alpn=["h2", "http/1.1"]),
                      server_context(leaf), HOST)
    assert t.client_error is None and t.server_error is None
    tr = track(t)
    assert tr.outcome == handshake.ESTABLISHED
    assert tr.version == expected
    assert tr.client_hello.sni_raw == HOST.encode()
    assert tr.client_hello.alpn == ("h2", "http/1.1")
    assert 0x0304 in tr.client_hello.offered_versions or version == ssl.TLSVersion.TLSv1_2
    if version == ssl.TLSVersion.TLSv1_2:
        # TLS 1.2 serves its chain in clear: the observed chain is the served leaf
        assert tr.certificates == [leaf.der]
    else:
        assert tr.certificates is None  # encrypted in TLS 1.3


def test_one_byte_writes_give_the_same_result(certs):
    root, leaf = certs
    t = run_handshake(client_context(root, max_version=ssl.TLSVersion.TLSv1_2),
                      server_context(leaf), HOST)
    whole, split = track(t), track(t, split=1)
    assert (split.outcome, split.version, split.certificates) == (
        whole.outcome, whole.version, whole.certificates)
    assert split.client_hello == whole.client_hello


def test_missing_sni_refused_by_server_alert(certs):
    root, leaf = certs
    t = run_handshake(client_context(None), server_context(leaf, sni_names={HOST}), None)
    tr = track(t)
    assert tr.outcome == handshake.SERVER_ALERT
    assert tr.alert.to_dict() == {"from": "server", "code": 112, "description": "unrecognized_name"}
    assert tr.client_hello.sni_raw is None and not tr.client_hello.sni_present


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_client_rejecting_certificate_is_a_client_alert(certs, version):
    _, leaf = certs
    other_root = make_cert("Some Other Root", ca=True)
    t = run_handshake(client_context(other_root, max_version=version), server_context(leaf), HOST)
    assert t.client_error is not None
    tr = track(t)
    assert tr.outcome == handshake.CLIENT_ALERT
    # OpenSSL sends its unknown_ca in clear even in TLS 1.3 (facts/mitmproxy.md)
    assert tr.alert.sender == "client" and tr.alert.code == 48
    tun = Tunnel("x", ("127.0.0.1", 1), HOST, 443, client_hello=tr.client_hello,
                 outcome=tr.outcome, alert=tr.alert, detail=tr.detail)
    assert [f.code for f in tunnel_findings(tun)] == ["client-rejected-certificate"]


@pytest.mark.parametrize("trusted,outcome", [(True, handshake.ESTABLISHED),
                                               (False, handshake.CLIENT_ALERT)])
def test_hello_retry_request_is_followed_to_the_end(certs, trusted, outcome):
    """A server that wants another key share answers with a HelloRetryRequest; both
    sides then send a compatibility ChangeCipherSpec before their second hello, which
    is still in clear."""
    root, leaf = certs
    server = server_context(leaf)
    server.set_ecdh_curve("secp384r1")  # the client's first key share is X25519
    t = run_handshake(client_context(root if trusted else None), server, HOST)
    sent = [data for from_client, data in t.chunks if from_client]
    assert sent[1][:1] == b"\x14"  # the retry happened: CCS, then the second ClientHello
    tr = track(t)
    assert tr.outcome == outcome
    assert tr.version == "TLSv1.3" and not tr.server_hello.retry
    assert tr.client_hello.sni_raw == HOST.encode()


@pytest.fixture(scope="module")
def clients():
    """A client CA the server asks for, its client certificate, and one from elsewhere."""
    ca, other = make_cert("Client CA", ca=True), make_cert("Other CA", ca=True)
    usage = (ExtendedKeyUsageOID.CLIENT_AUTH,)
    return ca, make_cert("client one", ca, usage=usage), make_cert("stranger", other, usage=usage)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
@pytest.mark.parametrize("case,mode,outcome", [
    ("good", ssl.CERT_REQUIRED, handshake.ESTABLISHED),
    (None, ssl.CERT_OPTIONAL, handshake.ESTABLISHED),  # asked for, none sent, accepted
    (None, ssl.CERT_REQUIRED, handshake.SERVER_ALERT),
    ("stranger", ssl.CERT_REQUIRED, handshake.SERVER_ALERT),
])
def test_client_certificates_asked_for_by_the_server(certs, clients, version, case, mode, outcome):
    """Mutual TLS: in TLS 1.3 the request, the client's certificate and the server's
    refusal are all encrypted; record sizes and order tell the refusal apart from the
    client's own answer."""
    root, leaf = certs
    ca, good, stranger = clients
    cert = {"good": good, "stranger": stranger, None: None}[case]
    t = run_handshake(client_context(root, max_version=version, cert=cert),
                      server_context(leaf, client_ca=ca, client_cert=mode), HOST)
    assert (t.server_error is None) == (outcome == handshake.ESTABLISHED)
    tr = track(t)
    assert tr.outcome == outcome
    if outcome == handshake.SERVER_ALERT:
        assert tr.alert.sender == "server" and tr.alert.client_certificate
        (f,) = handshake_findings.outcome_findings(tr.outcome, tr.alert, tr.detail, True)
        assert f.code == "server-alert" and "client certificate" in f.message
        assert "mutual TLS" in f.hint
        if version == ssl.TLSVersion.TLSv1_2:
            assert tr.alert.code is not None  # in clear, after a CertificateRequest in clear


def test_tls13_early_data_end_is_no_alert():
    """0-RTT: the client's first record after the ServerHello is EndOfEarlyData (21
    bytes encrypted), then its Finished; the server's tickets accept."""
    tr = HandshakeTracker()
    tr.feed(True, _client_hello_record(b"svc.lab.test") + bytes([23, 3, 3, 0, 40]) + b"\x00" * 40)
    tr.feed(False, _server_hello_record(0x0304) + bytes([23, 3, 3, 0, 90]) + b"\x00" * 90)
    assert not tr.feed(True, bytes([23, 3, 3, 0, 21]) + b"\x00" * 21)
    assert not tr.feed(True, bytes([23, 3, 3, 0, 53]) + b"\x00" * 53)
    assert not tr.feed(True, bytes([23, 3, 3, 0, 19]) + b"\x00" * 19)  # close_notify: no verdict
    assert tr.feed(False, bytes([23, 3, 3, 0, 200]) + b"\x00" * 200)
    assert tr.outcome == handshake.ESTABLISHED and tr.alert is None


def test_a_warning_alert_does_not_end_the_handshake():
    """A TLS 1.2 server's warning unrecognized_name (OpenSSL's s_server, some Apache and
    Java servers) is followed by a complete handshake."""
    tr = HandshakeTracker()
    tr.feed(True, _client_hello_record(b"other.lab.test"))
    assert not tr.feed(False, bytes([21, 3, 3, 0, 2, 1, 112]) + _server_hello_record(0x0303))
    assert not tr.feed(True, bytes([20, 3, 3, 0, 1, 1]))
    assert tr.feed(False, bytes([20, 3, 3, 0, 1, 1]))
    assert tr.outcome == handshake.ESTABLISHED and tr.alert is None
    # the same warning, then a close: it is the last word there is
    tr = HandshakeTracker()
    tr.feed(True, _client_hello_record(b"other.lab.test"))
    tr.feed(False, bytes([21, 3, 3, 0, 2, 1, 112]))
    tr.closed()
    assert tr.outcome == handshake.SERVER_ALERT and tr.alert.code == 112


@pytest.mark.parametrize("first,detail", [
    ("client", "the client closed after its ClientHello, before the server answered"),
    ("server", "the server closed after the ClientHello without an alert"),
])
def test_who_closed_first_is_named(first, detail):
    tr = HandshakeTracker()
    tr.feed(True, _client_hello_record(b"svc.lab.test"))
    tr.side_closed(first == "client")
    tr.side_closed(first != "client")
    tr.closed()
    assert tr.outcome == handshake.CLOSED and tr.detail == detail


def test_encrypted_tls13_client_alert_is_recognised():
    tr = HandshakeTracker()
    hello = _client_hello_record(b"svc.lab.test")
    assert not tr.feed(True, hello)
    assert not tr.feed(False, _server_hello_record(0x0304))
    # a 19-byte application_data record: an encrypted alert (2 + 1 + 16-byte tag)
    assert tr.feed(True, bytes([23, 3, 3, 0, 19]) + b"\x00" * 19)
    assert tr.outcome == handshake.CLIENT_ALERT and tr.alert.code is None


def test_plaintext_inside_tunnel_is_not_tls():
    tr = HandshakeTracker()
    assert tr.feed(True, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert tr.outcome == handshake.NOT_TLS
    assert "GET / HTTP/1.1" in tr.detail


def test_malformed_client_hello_is_reported_not_raised():
    tr = HandshakeTracker()
    # a handshake record whose ClientHello claims more bytes than it carries
    body = b"\x03\x03" + b"\x00" * 10
    msg = bytes([1]) + len(body).to_bytes(3, "big") + body
    assert tr.feed(True, bytes([22, 3, 1]) + len(msg).to_bytes(2, "big") + msg)
    assert tr.outcome == handshake.NOT_TLS
    assert tr.detail.startswith("malformed ClientHello")


@pytest.mark.parametrize("outcome_after", ["nothing", "hello", "serverhello"])
def test_close_before_finish_names_the_stage(outcome_after):
    tr = HandshakeTracker()
    if outcome_after != "nothing":
        tr.feed(True, _client_hello_record(b"x.test"))
    if outcome_after == "serverhello":
        tr.feed(False, _server_hello_record(0x0303))
    tr.closed()
    assert tr.outcome == handshake.CLOSED
    assert {"nothing": "before the client sent anything",
            "hello": "after the ClientHello",
            "serverhello": "after the ServerHello"}[outcome_after] in tr.detail


def test_decided_tracker_ignores_later_bytes_and_keeps_no_buffers(certs):
    root, leaf = certs
    t = run_handshake(client_context(root), server_context(leaf), HOST)
    scratch = HandshakeTracker()
    deciding = next(i for i, (from_client, data) in enumerate(t.chunks) if scratch.feed(from_client, data))
    # The deciding read also brings most of a 16 KiB application-data record (TCP keeps
    # no record boundaries): the record reader holds that partial record when the
    # outcome is decided. Memory the parsers allocated and still hold afterwards is
    # measured, not looked up in the tracker's attributes.
    partial = b"\x17\x03\x03" + (16384).to_bytes(2, "big") + b"\x00" * 16000
    parsers = [tracemalloc.Filter(True, wire.__file__), tracemalloc.Filter(True, handshake.__file__)]
    tracemalloc.start()
    try:
        tr = HandshakeTracker()
        for i, (from_client, data) in enumerate(t.chunks[:deciding + 1]):
            decided = tr.feed(from_client, data + partial if i == deciding else data)
        held = sum(s.size for s in tracemalloc.take_snapshot().filter_traces(parsers).statistics("filename"))
    finally:
        tracemalloc.stop()
    assert decided and tr.outcome == handshake.ESTABLISHED
    assert held < 8192, f"a decided tracker still holds {held} bytes allocated by the parsers"
    assert tr.feed(True, b"\xff" * 100000)  # application data: not even looked at
    assert tr.outcome == handshake.ESTABLISHED


def test_grease_and_versions_parsed_from_supported_versions():
    ch = wire.parse_client_hello(_client_hello_body(b"a.test", versions=[0x1A1A, 0x0304, 0x0303]))
    assert ch.versions == (0x0304, 0x0303)


# --- hand-built records for corners a real peer will not produce on demand ----------

def _client_hello_body(sni: bytes | None, versions=(0x0304, 0x0303)) -> bytes:
    exts = b""
    if sni is not None:
        entry = b"\x00" + len(sni).to_bytes(2, "big") + sni
        data = len(entry).to_bytes(2, "big") + entry
        exts += b"\x00\x00" + len(data).to_bytes(2, "big") + data
    vl = b"".join(v.to_bytes(2, "big") for v in versions)
    vdata = bytes([len(vl)]) + vl
    exts += b"\x00\x2b" + len(vdata).to_bytes(2, "big") + vdata
    return (b"\x03\x03" + b"\x11" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
            + len(exts).to_bytes(2, "big") + exts)


def _record(rtype: int, msg_type: int, body: bytes) -> bytes:
    msg = bytes([msg_type]) + len(body).to_bytes(3, "big") + body
    return bytes([rtype, 3, 1]) + len(msg).to_bytes(2, "big") + msg


def _client_hello_record(sni: bytes | None) -> bytes:
    return _record(22, 1, _client_hello_body(sni))


def _server_hello_record(version: int) -> bytes:
    ext = b""
    if version == 0x0304:
        ext = b"\x00\x2b\x00\x02\x03\x04"
    body = (b"\x03\x03" + b"\x22" * 32 + b"\x00" + b"\x13\x01" + b"\x00"
            + len(ext).to_bytes(2, "big") + ext)
    return _record(22, 2, body)


def _split_records(rtype: int, message: bytes, size: int = 16384) -> bytes:
    return b"".join(bytes([rtype, 3, 3]) + len(message[i:i + size]).to_bytes(2, "big")
                    + message[i:i + size] for i in range(0, len(message), size))


def test_a_certificate_message_over_the_read_limit_is_passed_over_not_malformed():
    """A 364 KB Certificate message is legal (up to 2^24): the tracker passes over it
    without buffering it and still reads how the handshake ends."""
    tr = HandshakeTracker()
    tr.feed(True, _client_hello_record(b"svc.lab.test"))
    tr.feed(False, _server_hello_record(0x0303))
    body = b"\x00" * (364 * 1024)
    certificate = bytes([wire.CERTIFICATE]) + len(body).to_bytes(3, "big") + body
    for i in range(0, len(certificate), 1000):  # in pieces, as a socket delivers it
        assert not tr.feed(False, _split_records(22, certificate[i:i + 1000]))
        assert len(tr._server.handshake._buf) < 2000  # nothing of it is held
    assert not tr.feed(False, _split_records(22, bytes([14, 0, 0, 0])))  # ServerHelloDone
    assert not tr.feed(True, bytes([20, 3, 3, 0, 1, 1]))
    assert tr.feed(False, bytes([20, 3, 3, 0, 1, 1]))
    assert tr.outcome == handshake.ESTABLISHED and tr.version == "TLSv1.2"
    assert tr.certificates is None  # not observed: the chain stage probes for it


def test_a_warning_alert_then_silence_keeps_the_alert_in_the_timeout():
    tr = HandshakeTracker()
    tr.feed(True, _client_hello_record(b"other.lab.test"))
    tr.feed(False, bytes([21, 3, 3, 0, 2, 1, 112]))  # warning unrecognized_name
    tr.timed_out(10)
    assert tr.outcome == handshake.TIMEOUT
    assert tr.alert is not None and (tr.alert.sender, tr.alert.code) == ("server", 112)
    assert tr.detail == ("no ServerHello within 10 s, after the server's warning alert "
                         "unrecognized_name")


def test_a_client_ending_its_side_mid_handshake_decides_at_once():
    """The relay keeps the other direction open (half-close); the server may answer a
    client's early end with an alert, but the client had already given up."""
    tr = HandshakeTracker()
    tr.feed(True, _client_hello_record(b"svc.lab.test")[:20])
    tr.side_closed(True)
    assert tr.outcome == handshake.CLOSED
    assert tr.detail == "the client closed before a complete ClientHello"
    assert tr.feed(False, bytes([21, 3, 3, 0, 2, 2, 50]))  # the server's answer changes nothing
    assert tr.outcome == handshake.CLOSED


@pytest.mark.parametrize("switch_at", [0, 3, 7, 200, 16390])
@pytest.mark.parametrize("piece", [1, 5, 1000, 70000])
def test_a_headers_only_reader_sees_the_same_records_and_keeps_no_payload(switch_at, piece):
    """After a handshake only record types and sizes matter; switching mid-record keeps
    the record that had begun."""
    stream = b"".join(bytes([t, 3, 3]) + n.to_bytes(2, "big") + bytes([t]) * n
                      for t, n in [(23, 16384), (21, 19), (23, 100), (23, 16384), (22, 40)])
    full = wire.RecordReader().feed(stream)
    reader = wire.RecordReader()
    seen = reader.feed(stream[:switch_at])
    reader.keep_headers_only()
    for i in range(switch_at, len(stream), piece):
        seen += reader.feed(stream[i:i + piece])
        assert reader.pending < wire.RECORD_HEADER
    seen += reader.feed(b"")
    assert [(r.type, r.size) for r in seen] == [(r.type, r.size) for r in full]
