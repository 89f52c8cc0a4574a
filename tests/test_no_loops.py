"""No loops, through the real proxy: a CONNECT (or a plain request, or the upstream
proxy) that leads back into the proxy itself is refused, with one record and no nesting."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys

import pytest

from inspector.lab.http1 import read_head

from .support import HOST, tls_through_proxy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ask(proxy_port: int, request: bytes) -> bytes:
    """Send one request head; the whole answer, up to the proxy closing the connection."""
    answer = b""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=10) as s:
        s.sendall(request)
        while chunk := s.recv(4096):
            answer += chunk
    return answer


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


FORMS = ["0.0.0.0", "127.1", "2130706433", "0x7f000001", "[::ffff:127.0.0.1]", "localhost"]


def test_connect_to_the_proxy_itself_is_refused_with_one_record_and_no_nesting(
        start_proxy, strict_server, pki):
    p = start_proxy("--no-probe")
    base = _fds(p.proc.pid)
    for host in FORMS:
        # A second CONNECT right behind the first is how a client nests: it must never run.
        connect = f"CONNECT {host}:{p.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        answer = _ask(p.port, connect * 2)
        assert answer.startswith(b"HTTP/1.1 508 Loop Detected\r\n"), answer
        assert answer.count(b"HTTP/1.1") == 1  # and the connection closed after it
        assert _fds(p.proc.pid) <= base + 2
    code, _, _ = p.stop()  # tunnels still open would be written now: nested ones included
    recs = [json.loads(x) for x in p.jsonl.read_text().splitlines()]
    assert len(recs) == len(FORMS)
    for host, rec in zip(FORMS, recs):
        assert rec["connect"] == {"host": host.strip("[]"), "port": p.port}
        assert rec["handshake"]["outcome"] == "connect-failed"
        assert rec["handshake"]["detail"].startswith("refused: ")
        assert [(f["code"], f["severity"]) for f in rec["findings"]] == [("proxy-loop", "error")]
        assert rec["upstream"] is None  # nothing was connected


def test_connect_to_mapping_into_the_proxy_is_refused(start_proxy, strict_server, pki):
    own = _free_port()
    sp = strict_server.port
    p = start_proxy("--no-probe", "--listen-port", str(own),
                    "--connect-to", f"{HOST}:443:127.1:{own}",
                    "--connect-to", f"{HOST}:{sp}:127.0.0.1:{sp}")
    answer = _ask(p.port, f"CONNECT {HOST}:443 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 508"), answer
    rec = p.records(1)[0]
    assert rec["connect"] == {"host": HOST, "port": 443}  # the record keeps what was asked
    assert f"127.1:{own} is this proxy's own listening address" in rec["findings"][0]["message"]
    # an ordinary tunnel is untouched by the guard
    with tls_through_proxy(p.port, HOST, sp, cafile=pki["root_pem"], sni=HOST) as t:
        assert t.version()


def test_a_plain_request_to_the_proxy_itself_is_refused(start_proxy):
    p = start_proxy("--no-probe")
    base = _fds(p.proc.pid)
    # Before: one such request was forwarded to itself without end (5,000 descriptors in 10 s).
    answer = _ask(p.port, f"GET http://127.1:{p.port}/ HTTP/1.1\r\nHost: 127.1:{p.port}\r\n\r\n"
                  .encode())
    assert answer.startswith(b"HTTP/1.1 508"), answer[:200]
    assert _fds(p.proc.pid) <= base + 2
    code, out, err = p.stop()
    assert code == 0 and "Traceback" not in err
    assert out.splitlines()[-1] == "0 tunnels, 0 flagged"


def test_a_name_that_resolves_to_the_proxy_is_refused_before_connecting(tmp_path):
    """The real proxy in this process; only the name's DNS answer is made up (this test
    machine has no DNS), as the event loop's getaddrinfo, where every connect asks."""
    from inspector.mitm.addon import TunnelInspector
    from inspector.mitm.embed import Proxy

    name = "loop.lab.test"
    addon = TunnelInspector()
    records: list[dict] = []
    addon.stream.subscribe(records.append)
    asked: list[str] = []

    async def run():
        loop = asyncio.get_running_loop()
        real = loop.getaddrinfo

        async def getaddrinfo(host, *args, **kwargs):
            asked.append(host)
            return await real("127.0.0.1" if host == name else host, *args, **kwargs)

        loop.getaddrinfo = getaddrinfo
        proxy = Proxy([addon], {"listen_host": "127.0.0.1", "listen_port": 0,
                                "inspector_probe": False})
        _, port = await proxy.start()
        try:
            def client() -> bytes:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.sendall(f"CONNECT {name}:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    return read_head(s)

            answer = await asyncio.to_thread(client)
            served = len(asked)
            def other_port() -> bytes:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.sendall(f"CONNECT {name}:9 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    return read_head(s)

            # the same name on another port is not looked up by the guard
            assert (await asyncio.to_thread(other_port)).startswith(b"HTTP/1.1 502")
        finally:
            await proxy.stop()
        return answer, port, served

    answer, port, served = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 502"), answer
    assert served == 1  # the guard's lookup; mitmproxy never connected
    assert asked.count(name) == 2  # and the port-9 tunnel: mitmproxy's own lookup only
    loops = [r for r in records if r["connect"]["port"] == port]
    assert len(loops) == 1, records
    assert [f["code"] for f in loops[0]["findings"]] == ["proxy-loop"]
    assert f"{name} resolves to 127.0.0.1, and 127.0.0.1:{port}" in loops[0]["handshake"]["detail"]


@pytest.mark.parametrize("host", ["0.0.0.0", "127.1", "localhost", "[::ffff:127.0.0.1]"])
def test_an_upstream_proxy_that_is_the_proxy_itself_is_exit_2(host):
    own = _free_port()
    r = subprocess.run([sys.executable, "-m", "inspector.cli", "--headless", "--listen-port",
                        str(own), "--upstream-proxy", f"http://{host}:{own}", "--duration", "5"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "listening on" not in r.stdout and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "would send every tunnel back into this proxy" in r.stderr
