"""Read from the sizes and order of encrypted records (TLS 1.3), and negotiation
failures explained: real OpenSSL peers in memory where they can produce the case,
hand-built records for the corners only another stack produces (the real stacks run
in test_real_stacks.py)."""

from __future__ import annotations

import ssl

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from inspector.findings import handshake as handshake_findings
from inspector.findings.codes import finding
from inspector.findings.tunnel import tunnel_findings
from inspector.lab.pki import make_cert
from inspector.observe import handshake
from inspector.observe.handshake import (
    CLIENT_LEFT_SILENTLY,
    CLOSED_AFTER_HANDSHAKE,
    HandshakeTracker,
)
from inspector.records.record import Tunnel

from .handshakes import client_context, server_context
from .handshakes import handshake as run_handshake
from .test_handshake import _client_hello_record, _record, track

HOST = "svc.lab.test"


@pytest.fixture(scope="module")
def certs():
    root = make_cert("Negotiation Root", ca=True)
    return root, make_cert(HOST, root, sans=(HOST,))


def _tunnel(tr: HandshakeTracker, chain_findings=()) -> tuple[dict, list[str]]:
    t = Tunnel("x", ("127.0.0.1", 1), HOST, 443, client_hello=tr.client_hello, outcome=tr.outcome,
               alert=tr.alert, detail=tr.detail, server_hello=tr.server_hello,
               client_certificate=tr.client_certificate())
    findings = tunnel_findings(t, chain_findings=chain_findings)
    return t.to_record(findings), [f.code for f in findings]


def _server_hello(suite: int) -> bytes:
    ext = b"\x00\x2b\x00\x02\x03\x04"
    body = (b"\x03\x03" + b"\x22" * 32 + b"\x00" + suite.to_bytes(2, "big") + b"\x00"
            + len(ext).to_bytes(2, "big") + ext)
    return _record(22, 2, body)


def _app(size: int) -> bytes:
    return bytes([23, 3, 3]) + size.to_bytes(2, "big") + b"\x00" * size


def _tls13_to_the_client_turn(suite: int = 0x1301) -> HandshakeTracker:
    tr = HandshakeTracker()
    tr.feed(True, _client_hello_record(HOST.encode()))
    tr.feed(False, _server_hello(suite) + bytes([20, 3, 3, 0, 1, 1]) + _app(2000))
    return tr


@pytest.mark.parametrize("suite,finished", [(0x1301, 53), (0x1302, 69), (0x1305, 45)])
def test_a_record_too_short_for_a_finished_then_the_close_is_an_alert(suite, finished):
    """JSSE pads every TLS 1.3 record with 16 zero bytes: its encrypted alert is 35
    bytes, too short for the Finished the cipher suite implies."""
    tr = _tls13_to_the_client_turn(suite)
    assert not tr.feed(True, bytes([20, 3, 3, 0, 1, 1]) + _app(finished - 1))
    tr.side_closed(True)
    assert tr.outcome == handshake.CLIENT_ALERT
    assert tr.alert.to_dict() == {"from": "client", "code": None, "description": "encrypted"}


def test_a_short_record_followed_by_a_finished_is_a_handshake_message():
    """An empty client Certificate (padded by JSSE to 41), then the Finished (69)."""
    tr = _tls13_to_the_client_turn()
    assert not tr.feed(True, _app(41))
    assert not tr.feed(True, _app(69))
    assert tr.client_answered and tr.alert is None
    assert tr.feed(False, _app(250))  # the server's tickets accept
    assert tr.outcome == handshake.ESTABLISHED


def test_java_hint_names_jsse():
    tr = _tls13_to_the_client_turn()
    tr.feed(True, _app(35))
    tr.closed()
    t = Tunnel("x", ("127.0.0.1", 1), HOST, 443, client_hello=tr.client_hello, outcome=tr.outcome,
               alert=tr.alert, detail=tr.detail)
    (f,) = handshake_findings.outcome_findings(t.outcome, t.alert, t.detail, True, stack="java")
    assert f.code == "client-rejected-certificate" and "35 bytes" in f.message
    assert "JSSE" in f.hint and "certificate_unknown" in f.hint


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_closed_right_after_the_handshake_gets_its_note(certs, version):
    root, leaf = certs
    t = run_handshake(client_context(root, max_version=version), server_context(leaf), HOST)
    tr = track(t)
    assert tr.outcome == handshake.ESTABLISHED and not tr.settled  # reading what follows
    tr.side_closed(True)  # the client leaves without a byte of data
    assert tr.settled and tr.detail == CLOSED_AFTER_HANDSHAKE
    record, codes = _tunnel(tr)
    assert codes == [] and record["flagged"] is False


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_data_after_the_handshake_settles_without_a_note(certs, version):
    root, leaf = certs
    t = run_handshake(client_context(root, max_version=version), server_context(leaf), HOST)
    tr = track(t)
    assert tr.feed(True, _app(120))  # the client's request
    assert tr.settled and tr.outcome == handshake.ESTABLISHED and tr.detail is None


def test_a_silent_close_after_the_server_flight_explained_by_the_chain():
    """Node in TLS 1.3 checks the certificate after OpenSSL's handshake and closes
    without its Finished or an alert: with a chain finding that explains it, that is
    a rejected certificate, not an aborted handshake."""
    tr = _tls13_to_the_client_turn()
    tr.side_closed(True)
    assert tr.outcome == handshake.CLOSED and tr.detail == CLIENT_LEFT_SILENTLY
    untrusted = finding("untrusted", "no profile validates the chain", "serve ...")
    _, alone = _tunnel(tr)
    assert "handshake-aborted" in alone
    _, explained = _tunnel(tr, [untrusted])
    assert "handshake-aborted" not in explained
    assert explained == ["client-rejected-certificate", "untrusted"]


def test_protocol_version_names_both_sides(certs):
    root, leaf = certs
    server = server_context(leaf)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    tr = track(run_handshake(client_context(root, max_version=ssl.TLSVersion.TLSv1_2), server, HOST))
    assert tr.outcome == handshake.SERVER_ALERT and tr.alert.code == 70
    record, codes = _tunnel(tr)
    f = next(f for f in record["findings"] if f["code"] == "server-alert")
    assert "the client offers TLSv1.2" in f["message"]
    assert "a newer version than the client's newest" in f["hint"]


def test_no_shared_cipher_is_explained_with_the_offer(certs):
    root, leaf = certs  # an ECDSA leaf: an RSA-only offer shares nothing with it
    client = client_context(root, max_version=ssl.TLSVersion.TLSv1_2)
    client.set_ciphers("AES128-SHA")
    tr = track(run_handshake(client, server_context(leaf), HOST))
    assert tr.outcome == handshake.SERVER_ALERT and tr.alert.code == 40 and tr.server_hello is None
    record, _ = _tunnel(tr)
    f = next(f for f in record["findings"] if f["code"] == "server-alert")
    assert "before choosing anything" in f["message"] and "offers 2 suites" in f["message"]
    assert record["client_hello"]["cipher_suites"] == ["TLS_RSA_WITH_AES_128_CBC_SHA",
                                                       "TLS_EMPTY_RENEGOTIATION_INFO_SCSV"]
    assert record["server_hello"] is None


def test_offer_and_choice_are_recorded(certs):
    root, leaf = certs
    tr = track(run_handshake(client_context(root, alpn=["h2", "http/1.1"]),
                             server_context(leaf), HOST))
    record, _ = _tunnel(tr)
    assert "TLS_AES_256_GCM_SHA384" in record["client_hello"]["cipher_suites"]
    assert record["client_hello"]["alpn"] == ["h2", "http/1.1"]
    assert record["client_hello"]["stack"] == "openssl"
    assert record["client_hello"]["ja4"].startswith("t13d")
    assert record["server_hello"]["version"] == "TLSv1.3"
    assert record["server_hello"]["cipher_suite"] in ("TLS_AES_256_GCM_SHA384",
                                                      "TLS_AES_128_GCM_SHA256",
                                                      "TLS_CHACHA20_POLY1305_SHA256")


@pytest.mark.parametrize("with_cert,mode,sent,outcome", [
    (False, ssl.CERT_REQUIRED, False, handshake.SERVER_ALERT),
    (False, ssl.CERT_OPTIONAL, False, handshake.ESTABLISHED),
    (True, ssl.CERT_REQUIRED, True, handshake.ESTABLISHED),
])
def test_tls12_client_certificate_request_and_answer(certs, with_cert, mode, sent, outcome):
    root, leaf = certs
    ca = make_cert("Client CA", ca=True)
    cert = make_cert("client", ca, usage=(ExtendedKeyUsageOID.CLIENT_AUTH,)) if with_cert else None
    tr = track(run_handshake(client_context(root, max_version=ssl.TLSVersion.TLSv1_2, cert=cert),
                             server_context(leaf, client_ca=ca, client_cert=mode), HOST))
    assert tr.outcome == outcome
    record, _ = _tunnel(tr)
    assert record["handshake"]["client_certificate"] == {"requested": True, "sent": sent}
    if outcome == handshake.SERVER_ALERT:
        f = next(f for f in record["findings"] if f["code"] == "server-alert")
        assert f["message"].endswith("the client sent none")
