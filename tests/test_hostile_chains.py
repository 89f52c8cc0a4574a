"""Hostile certificates through the real proxy: a fake TLS 1.2 server sends whatever
Certificate message we give it, in clear, and the relay's observed chain is judged.
Judging never stalls the proxy: a good tunnel beside it completes its handshake."""

from __future__ import annotations

import os
import signal
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from inspector.lab.http1 import connect_tunnel
from inspector.lab.pki import DAY, NOW, make_cert, make_key
from inspector.lab.scripted import FlightServer

from .support import HOST

NAME = "fake.lab.test"
ALIVE_BOUND = 5.0  # seconds a good CONNECT + TLS handshake may take in the liveness check


def _tunnel(proxy_port: int, server: FlightServer) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        with ctx.wrap_socket(connect_tunnel(proxy_port, NAME, server.port), server_hostname=NAME):
            pass
    except (ssl.SSLError, OSError):
        pass  # there is no real server behind the certificates: the client gives up


def _raw_tunnel(proxy_port: int, server: FlightServer, hello: bytes) -> None:
    """A client that reads the server's whole flight, then leaves: unlike OpenSSL, which
    gives up on a Certificate message over 100 KB before the relay has seen all of it."""
    with connect_tunnel(proxy_port, NAME, server.port) as s:
        s.sendall(hello)
        got = 0
        while got < len(server.flight):  # bounded by the flight's size and the timeout
            chunk = s.recv(65536)
            if not chunk:
                break
            got += len(chunk)


def _client_hello(sni: str) -> bytes:
    """A real ClientHello from OpenSSL, as the bytes it would put on the wire."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(inc, out, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def _alive(proxy_port: int, good_server, pki, bound: float = ALIVE_BOUND) -> float:
    """Seconds a good tunnel (CONNECT + full TLS handshake to a real server) takes through
    the proxy; OSError if the proxy does not answer within `bound` at any step."""
    start = time.monotonic()
    ctx = ssl.create_default_context(cafile=pki["root_pem"])
    sock = connect_tunnel(proxy_port, HOST, good_server.port, timeout=bound)
    with ctx.wrap_socket(sock, server_hostname=HOST):
        return time.monotonic() - start


def _proxy(start_proxy, server: FlightServer, good_server):
    return start_proxy(
        "--connect-to", f"{NAME}:{server.port}:127.0.0.1:{server.port}",
        "--connect-to", f"{HOST}:{good_server.port}:127.0.0.1:{good_server.port}",
        "--no-probe",
    )


@pytest.fixture
def through(start_proxy, strict_server, pki):
    """Serves `ders` to one tunnel through a fresh proxy; the record, once the proxy has
    shown it still relays a good tunnel."""

    def run(ders):
        server = FlightServer(ders)
        try:
            p = _proxy(start_proxy, server, strict_server)
            _tunnel(p.port, server)
            rec = p.records(1)[0]
            _alive(p.port, strict_server, pki)  # the proxy still relays after the abuse
            return rec
        finally:
            server.close()

    return run


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _small_cert(cn: str, issuer_cn: str, key, signer) -> bytes:
    """A CA certificate with names, a key and basicConstraints only (~320 bytes): 600 of
    them fit in the relay's 256 KB limit for one handshake message."""
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(_name(issuer_cn)).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY).not_valid_after(NOW + 365 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(signer, hashes.SHA256())
        .public_bytes(Encoding.DER)
    )


@pytest.fixture(scope="module")
def same_name_reversed() -> list[bytes]:
    """A leaf and 599 CAs all named "hostile", each signed by the next, served top first:
    the served walk scans every remaining CA at each step (~180,000 signature checks)."""
    keys = [make_key() for _ in range(600)]  # keys[0] the leaf's, keys[i] CA i's
    leaf = _small_cert(NAME, "hostile", keys[0], keys[1])
    cas = [_small_cert("hostile", "hostile", keys[i], keys[min(i + 1, 599)]) for i in range(1, 600)]
    ders = [leaf] + cas[::-1]
    assert sum(map(len, ders)) < 250_000
    return ders


def test_a_huge_chain_never_stalls_a_good_tunnel(start_proxy, strict_server, pki,
                                                same_name_reversed):
    server = FlightServer(same_name_reversed)
    try:
        p = _proxy(start_proxy, server, strict_server)
        _raw_tunnel(p.port, server, _client_hello(NAME))  # decided: the verdict starts now
        watch_until = time.monotonic() + 3.0
        slowest, count = 0.0, 0
        while time.monotonic() < watch_until or not p.records(1, timeout=0):
            assert time.monotonic() < watch_until + 30, "the huge chain's record never came"
            try:
                slowest = max(slowest, _alive(p.port, strict_server, pki, bound=2.0))
            except OSError as e:
                pytest.fail(f"a good tunnel through the proxy got no handshake in 2 s while "
                            f"the huge chain was judged ({e!r})")
            count += 1
        assert slowest <= 1.0, f"a good tunnel's handshake took {slowest:.2f} s"
        assert count >= 3
    finally:
        server.close()


def test_a_huge_chain_gets_a_too_large_finding(start_proxy, strict_server, pki,
                                              same_name_reversed):
    server = FlightServer(same_name_reversed)
    try:
        p = _proxy(start_proxy, server, strict_server)
        _raw_tunnel(p.port, server, _client_hello(NAME))
        recs = p.records(1, timeout=10)
        assert recs, "no record within 10 s"
        rec = recs[0]
        assert rec["connect"]["host"] == NAME
        assert rec["chain"] is None  # not judged, and not 600 entries in one record line
        big = [f for f in rec["findings"] if f["code"] == "probe-failed"]
        assert len(big) == 1, rec["findings"]
        assert big[0]["message"].startswith("chain too large to judge: 600 certificates")
        assert rec["flagged"] is True
        code, _, err = p.stop()
        assert code == 0 and "Traceback" not in err
    finally:
        server.close()


def test_the_liveness_check_fails_against_a_frozen_proxy(start_proxy, strict_server, pki):
    """_alive is only evidence if it cannot pass against a proxy that does not run."""
    p = start_proxy("--connect-to", f"{HOST}:{strict_server.port}:127.0.0.1:{strict_server.port}",
                    "--no-probe")
    assert _alive(p.port, strict_server, pki) < ALIVE_BOUND
    os.kill(p.proc.pid, signal.SIGSTOP)  # our own child, by its PID
    try:
        with pytest.raises(OSError):
            _alive(p.port, strict_server, pki, bound=1.0)
    finally:
        os.kill(p.proc.pid, signal.SIGCONT)


def test_certificate_cryptography_cannot_parse(through):
    leaf = make_cert(NAME)
    rec = through([leaf.der, b"\x30\x03\x02\x01\x00"])
    chain = rec["chain"]
    assert chain["source"] == "observed" and len(chain["certificates"]) == 2
    assert chain["certificates"][1]["subject"] == "unparseable"
    bad = [f for f in rec["findings"] if "cannot be parsed" in f["message"]]
    assert len(bad) == 1 and bad[0]["severity"] == "error" and "#1" in bad[0]["message"]
    assert rec["flagged"] is True


def test_chain_of_50_certificates(through):
    issuer = make_cert("hostile root 0", ca=True)
    chain = []
    for i in range(1, 50):
        issuer_next = make_cert(f"hostile intermediate {i}", issuer, ca=True)
        chain.append(issuer_next)
        issuer = issuer_next
    leaf = make_cert(NAME, issuer, sans=(NAME,))
    ders = [leaf.der] + [c.der for c in reversed(chain)]
    assert len(ders) == 50
    rec = through(ders)
    assert len(rec["chain"]["certificates"]) == 50
    codes = {f["code"] for f in rec["findings"]}
    assert "untrusted" in codes or "incomplete-chain" in codes
    assert rec["flagged"] is True
