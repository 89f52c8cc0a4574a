"""Hostile certificates through the real proxy: a fake TLS 1.2 server sends whatever
Certificate message we give it, in clear, and the relay's observed chain is judged."""

from __future__ import annotations

import socket
import ssl
import threading

from inspector.lab.http1 import connect_tunnel, read_head
from inspector.lab.pki import make_cert


NAME = "fake.lab.test"


class FakeTLS12Server:
    """ServerHello + Certificate(ders) + ServerHelloDone, then close: enough for the
    relay to see a served chain; no real key exchange ever happens."""

    def __init__(self, ders: list[bytes]) -> None:
        certs = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
        body = len(certs).to_bytes(3, "big") + certs
        hello = b"\x03\x03" + b"\x42" * 32 + b"\x00" + b"\xc0\x2f" + b"\x00"
        flight = (self._msg(2, hello) + self._msg(11, body) + self._msg(14, b""))
        self.flight = b"".join(
            b"\x16\x03\x03" + len(flight[i:i + 16384]).to_bytes(2, "big") + flight[i:i + 16384]
            for i in range(0, len(flight), 16384)
        )
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _msg(t: int, body: bytes) -> bytes:
        return bytes([t]) + len(body).to_bytes(3, "big") + body

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(65536)  # the ClientHello
                conn.sendall(self.flight)
                conn.recv(65536)  # the client's reaction, or EOF
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def _tunnel(proxy_port: int, server: FakeTLS12Server) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    try:
        with ctx.wrap_socket(connect_tunnel(proxy_port, NAME, server.port), server_hostname=NAME):
            pass
    except (ssl.SSLError, OSError):
        pass  # there is no real server behind the certificates: the client gives up


def _through(start_proxy, ders):
    server = FakeTLS12Server(ders)
    try:
        p = start_proxy("--connect-to", f"{NAME}:{server.port}:127.0.0.1:{server.port}", "--no-probe")
        _tunnel(p.port, server)
        rec = p.records(1)[0]
        # the proxy still answers a CONNECT after the abuse (a bare TCP connect would
        # succeed even with the proxy stopped: the kernel accepts into the backlog)
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            s.sendall(f"CONNECT {NAME}:{server.port} HTTP/1.1\r\nHost: {NAME}\r\n\r\n".encode())
            assert read_head(s).startswith(b"HTTP/1.1 "), "the proxy did not answer a CONNECT"
        return rec
    finally:
        server.close()


def test_certificate_cryptography_cannot_parse(start_proxy):
    leaf = make_cert(NAME)
    rec = _through(start_proxy, [leaf.der, b"\x30\x03\x02\x01\x00"])
    chain = rec["chain"]
    assert chain["source"] == "observed" and len(chain["certificates"]) == 2
    assert chain["certificates"][1]["subject"] == "unparseable"
    bad = [f for f in rec["findings"] if "cannot be parsed" in f["message"]]
    assert len(bad) == 1 and bad[0]["severity"] == "error" and "#1" in bad[0]["message"]
    assert rec["flagged"] is True


def test_chain_of_50_certificates(start_proxy):
    issuer = make_cert("hostile root 0", ca=True)
    chain = []
    for i in range(1, 50):
        issuer_next = make_cert(f"hostile intermediate {i}", issuer, ca=True)
        chain.append(issuer_next)
        issuer = issuer_next
    leaf = make_cert(NAME, issuer, sans=(NAME,))
    ders = [leaf.der] + [c.der for c in reversed(chain)]
    assert len(ders) == 50
    rec = _through(start_proxy, ders)
    assert len(rec["chain"]["certificates"]) == 50
    codes = {f["code"] for f in rec["findings"]}
    assert "untrusted" in codes or "incomplete-chain" in codes
    assert rec["flagged"] is True
