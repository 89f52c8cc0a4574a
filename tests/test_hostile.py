"""Hostile and broken input through the real proxy: each case ends in a record with a
clear finding, and the proxy keeps answering."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time

import pytest

from inspector.chain.probe import probe
from inspector.lab.http1 import connect_tunnel
from inspector.lab.scripted import ScriptedServer
from inspector.observe import wire

from .support import HOST, wait_for


def _client_hello(sni: str = HOST) -> bytes:
    """A real ClientHello from OpenSSL, as the bytes it would put on the wire."""
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    ctx = ssl.create_default_context()
    obj = ctx.wrap_bio(inc, out, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def _send_and_close(proxy_port: int, target_port: int, data: bytes, chunk: int | None = None,
                    wait: float = 0.3) -> None:
    with connect_tunnel(proxy_port, HOST, target_port) as s:
        if chunk:
            for i in range(0, len(data), chunk):
                s.sendall(data[i:i + chunk])
        else:
            s.sendall(data)
        s.settimeout(wait)
        try:
            s.recv(4096)
        except (TimeoutError, ConnectionError):
            pass


def _alive(proxy, strict_server, pki) -> None:
    """The proxy still relays a normal tunnel after the abuse."""
    ctx = ssl.create_default_context(cafile=pki["root_pem"])
    with ctx.wrap_socket(connect_tunnel(proxy.port, HOST, strict_server.port), server_hostname=HOST):
        pass


@pytest.fixture
def proxy(start_proxy, strict_server):
    port = strict_server.port
    return start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}",
                       "--handshake-timeout", "2", "--no-probe")


def _last(proxy, n):
    recs = proxy.records(n, timeout=10)
    assert len(recs) >= n, recs
    return recs[n - 1]


def codes(rec):
    return [f["code"] for f in rec["findings"]]


def test_truncated_client_hello_then_close(proxy, strict_server, pki):
    hello = _client_hello()
    _send_and_close(proxy.port, strict_server.port, hello[: len(hello) // 2])
    rec = _last(proxy, 1)
    assert rec["handshake"]["outcome"] in ("closed", "timeout")
    assert "handshake-aborted" in codes(rec)
    _alive(proxy, strict_server, pki)
    assert len(proxy.records(2)) == 2


def test_malformed_client_hello(proxy, strict_server, pki):
    body = b"\x03\x03" + b"\x00" * 32 + b"\xff"  # session-id length runs past the end
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    _send_and_close(proxy.port, strict_server.port, b"\x16\x03\x01" + len(msg).to_bytes(2, "big") + msg)
    rec = _last(proxy, 1)
    assert rec["handshake"]["outcome"] == "not-tls"
    assert rec["handshake"]["detail"].startswith("malformed ClientHello")
    assert codes(rec) == ["not-tls"]
    _alive(proxy, strict_server, pki)


def test_oversized_record_header(proxy, strict_server, pki):
    _send_and_close(proxy.port, strict_server.port, b"\x16\x03\x01\xff\xff" + b"\x00" * 100)
    rec = _last(proxy, 1)
    assert rec["handshake"]["outcome"] == "not-tls"
    assert "exceeds" in rec["handshake"]["detail"]
    _alive(proxy, strict_server, pki)


def test_client_hello_in_one_byte_writes(proxy, strict_server, pki):
    """Split to single bytes, the hello still parses; the server sees it whole."""
    hello = _client_hello()
    _send_and_close(proxy.port, strict_server.port, hello, chunk=1, wait=1.0)
    rec = _last(proxy, 1)
    assert rec["sni"] == HOST
    assert rec["client_hello"]["sni_present"] is True
    _alive(proxy, strict_server, pki)


def test_garbage_right_after_connect(proxy, strict_server, pki):
    _send_and_close(proxy.port, strict_server.port, b"\x00\xff\x1b[31mgarbage\r\n")
    rec = _last(proxy, 1)
    assert rec["handshake"]["outcome"] == "not-tls"
    assert "\x1b" not in rec["handshake"]["detail"]  # shown as \\x1b, never raw
    _alive(proxy, strict_server, pki)


def test_sni_with_control_characters_and_markup(proxy, strict_server, pki):
    """Python's ssl refuses such a name, so the hello is built by hand around it."""
    evil = b"[bold]x\x1b]0;pwned\x07.lab.test"
    hello = _hand_hello(evil)
    _send_and_close(proxy.port, strict_server.port, hello, wait=1.0)
    rec = _last(proxy, 1)
    assert rec["sni"] == evil.decode()
    assert "sni-invalid" in codes(rec)
    _alive(proxy, strict_server, pki)
    code, out, _ = proxy.stop()
    line = next(x for x in out.splitlines() if "sni-invalid" in x)
    assert "\x1b" not in line and "\x07" not in line and "\\x1b" in line


@pytest.mark.parametrize("line,host,port", [
    (b"CONNECT a.example:99999 HTTP/1.1", "a.example", 0),
    (b"CONNECT [bad HTTP/1.1", "[bad", 0),
    (b"CONNECT a.example HTTP/1.1", "a.example", 0),
])
def test_bad_connect_line(proxy, strict_server, pki, line, host, port):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(line + b"\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    rec = _last(proxy, 1)
    assert rec["connect"] == {"host": host, "port": port}
    assert rec["handshake"]["outcome"] == "connect-failed"
    assert codes(rec) == ["bad-connect"]
    _alive(proxy, strict_server, pki)


def test_tls_to_the_proxy_itself(proxy, strict_server, pki):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
        s.sendall(_client_hello())
        s.settimeout(3)
        try:
            s.recv(100)
        except (TimeoutError, ConnectionError):
            pass
    rec = _last(proxy, 1)
    assert codes(rec) == ["bad-connect"]
    assert "started TLS with the proxy" in rec["handshake"]["detail"]
    _alive(proxy, strict_server, pki)


def test_server_stalls_mid_handshake(proxy, start_proxy):
    stall = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        with connect_tunnel(proxy.port, "127.0.0.1", stall.getsockname()[1]) as s:
            s.sendall(_client_hello())
            rec = _last(proxy, 1)  # the 2 s handshake timeout decides
        assert rec["handshake"]["outcome"] == "timeout"
        assert rec["handshake"]["detail"] == "no ServerHello within 2 s"
        assert "handshake-aborted" in codes(rec)
    finally:
        stall.close()


def test_client_disconnects_mid_handshake(proxy, strict_server, pki):
    hello = _client_hello()
    with connect_tunnel(proxy.port, HOST, strict_server.port) as s:
        s.sendall(hello)
        assert s.recv(1)  # the server's flight is arriving; the client walks away
    rec = _last(proxy, 1)
    assert rec["sni"] == HOST
    assert rec["handshake"]["outcome"] in ("closed", "established", "client-alert")
    _alive(proxy, strict_server, pki)


def test_many_abusive_clients_leave_every_record(proxy, strict_server, pki):
    hello = _client_hello()
    cases = [hello[:10], b"\x16\x03\x01\xff\xff", b"GET / HTTP/1.0\r\n\r\n", b"", hello]
    for i in range(40):
        _send_and_close(proxy.port, strict_server.port, cases[i % len(cases)], wait=0.05)
    recs = proxy.records(40, timeout=20)
    assert len(recs) == 40
    assert len({r["id"] for r in recs}) == 40
    _alive(proxy, strict_server, pki)


def _hand_hello(sni: bytes) -> bytes:
    entry = b"\x00" + len(sni).to_bytes(2, "big") + sni
    data = len(entry).to_bytes(2, "big") + entry
    exts = b"\x00\x00" + len(data).to_bytes(2, "big") + data
    exts += b"\x00\x2b\x00\x03\x02\x03\x04"
    body = (b"\x03\x03" + b"\x11" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
            + len(exts).to_bytes(2, "big") + exts)
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(msg).to_bytes(2, "big") + msg


def test_an_unread_stdout_does_not_stall_the_proxy(start_proxy, strict_server, pki):
    """The test harness reads the proxy's stdout only at the end: 1,200 lines (~100 KB) fill
    a pipe; the relay must not wait for the reader."""
    port = strict_server.port
    p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}", "--no-probe")
    ctx = ssl.create_default_context(cafile=pki["root_pem"])
    deadline = time.monotonic() + 90
    for _ in range(1200):
        assert time.monotonic() < deadline, "the proxy slowed to a stall"
        with ctx.wrap_socket(connect_tunnel(p.port, HOST, port), server_hostname=HOST):
            pass
    assert len(p.records(1200, timeout=20)) == 1200
    code, out, err = p.stop()
    assert code == 0 and out.count("CONNECT ") == 1200 and "not printed" not in err


def test_load_500_mixed_tunnels_50_at_a_time(start_proxy, strict_server, pki):
    """The bench's 10,000-tunnel load, scaled down: good and broken tunnels at once."""
    import concurrent.futures

    port = strict_server.port
    p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}")
    good = ssl.create_default_context(cafile=pki["root_pem"])
    lax = ssl.create_default_context()
    lax.check_hostname, lax.verify_mode = False, ssl.CERT_NONE
    untrusting = ssl.create_default_context()  # the lab root unknown: rejects

    def one(i):
        kind = i % 4
        try:
            if kind == 3:
                _send_and_close(p.port, port, b"\x16\x03\x01\x00\x05hello", wait=0.05)
                return "garbage"
            ctx, sni = [(good, HOST), (lax, None), (untrusting, HOST)][kind]
            with ctx.wrap_socket(connect_tunnel(p.port, HOST, port), server_hostname=sni):
                return "ok"
        except (ssl.SSLError, OSError):
            return "failed"

    with concurrent.futures.ThreadPoolExecutor(50) as ex:
        results = list(ex.map(one, range(500)))
    assert results.count("ok") == 125
    recs = p.records(500, timeout=60)
    assert len(recs) == 500 and len({r["id"] for r in recs}) == 500
    outcomes = [r["handshake"]["outcome"] for r in recs]
    assert outcomes.count("established") == 125
    assert outcomes.count("server-alert") == 125  # no SNI: refused by the SNI-only server
    assert outcomes.count("client-alert") == 125
    _alive(p, strict_server, pki)


def test_sni_with_a_nul_byte_gets_a_finding_not_a_traceback(start_proxy, strict_server):
    """OpenSSL cannot send such a name, so the probe cannot repeat the client's
    handshake: one finding says so, the record is written, nothing is printed."""
    port = strict_server.port
    p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}", "--handshake-timeout", "2")
    _send_and_close(p.port, port, _hand_hello(b"nul\x00.lab.test"), wait=1.0)
    rec = _last(p, 1)
    assert rec["sni"] == "nul\x00.lab.test"
    assert rec["handshake"]["outcome"] == "server-alert"  # OpenSSL servers refuse it
    failed = [f["message"] for f in rec["findings"] if f["code"] == "probe-failed"]
    assert failed == [
        "could not fetch the server's chain with the client's SNI (the probe cannot send "
        "this SNI: OpenSSL refuses a NUL byte in a server name); the chain shown is the one "
        f"served for {HOST}"
    ]
    assert rec["chain"]["source"] == "probe"  # the probe with the CONNECT host still ran
    code, out, err = p.stop()
    assert code == 0 and "Traceback" not in err and "Traceback" not in out


class HelloRecorder(ScriptedServer):
    """Keeps the first TLS record of every connection (a ClientHello), then closes: what
    the tunnel's client and each probe put on the wire."""

    def __init__(self) -> None:
        self.hellos: list[bytes] = []
        super().__init__(self._record)

    def _record(self, conn) -> None:
        data = b""
        try:
            while len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            self.hellos.append(data)

    def snis(self) -> list[bytes | None]:
        return [wire.parse_client_hello(h[9:]).sni_raw for h in self.hellos if len(h) > 9]


def test_the_probe_sends_exactly_the_clients_sni_bytes(start_proxy):
    """Invalid UTF-8 in the SNI: the probe repeats the bytes, not their escaped text."""
    sni = b"\xff\xfe.lab.test"
    recorder = HelloRecorder()
    try:
        port = recorder.port
        p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}",
                        "--handshake-timeout", "2")
        _send_and_close(p.port, port, _hand_hello(sni), wait=1.0)
        rec = _last(p, 1)
        assert rec["sni"] == "\\xff\\xfe.lab.test"
        # the tunnel, the probe with the client's SNI, the probe with the CONNECT host
        wait_for(lambda: len(recorder.hellos) >= 3, what="the tunnel's and two probes' hellos")
        assert recorder.snis() == [sni, sni, HOST.encode()]
        code, out, err = p.stop()
        assert code == 0 and "Traceback" not in err
    finally:
        recorder.close()


@pytest.mark.parametrize("sni,why", [
    (b"", "OpenSSL sends server names of 1 to 255 bytes, this one has 0"),
    (b"a" * 256, "OpenSSL sends server names of 1 to 255 bytes, this one has 256"),
])
def test_the_probe_says_which_sni_it_cannot_send(sni, why):
    """OpenSSL would drop such a name silently and probe without SNI: a wrong verdict."""
    result = asyncio.run(probe("127.0.0.1", 9, sni, timeout=2))
    assert (result.outcome, result.chain) == (None, None)
    assert result.error == f"the probe cannot send this SNI: {why}"
