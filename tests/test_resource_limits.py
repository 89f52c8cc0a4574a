"""Bounded resources through the real proxy: the open-file limit, silent clients, running
out of descriptors, and a request head that never ends."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inspector.mitm.limits import Unrecorded

from .support import HOST, ProxyProcess, tls_through_proxy, wait_for


class LimitedProxy(ProxyProcess):
    """The real proxy, started with RLIMIT_NOFILE set to (soft, hard) before it runs."""

    def __init__(self, args: list[str], jsonl: Path, soft: int, hard: int) -> None:
        self._limits = (soft, hard)
        super().__init__(args, jsonl)

    def _popen(self, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE,
                                                                      self._limits))


def _start(tmp_path, pki, strict_server, soft, hard, *args) -> LimitedProxy:
    port = strict_server.port
    return LimitedProxy(["--trust", pki["root_pem"], "--no-probe",
                         "--connect-to", f"{HOST}:{port}:127.0.0.1:{port}", *args],
                        tmp_path / "t.jsonl", soft, hard)


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit in /proc")


def _own_limit_at_least(n: int) -> None:
    """This test process holds the silent sockets itself: it needs the descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n:
        pytest.fail(f"the hard open-file limit ({hard}) is below the {n} this test needs")
    if soft != resource.RLIM_INFINITY and soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def _silent_sockets(port: int, n: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]


def _good_tunnel(proxy_port: int, strict_server, pki) -> None:
    with tls_through_proxy(proxy_port, HOST, strict_server.port, cafile=pki["root_pem"],
                           sni=HOST) as tls:
        assert tls.version() is not None


def test_the_soft_open_file_limit_is_raised_so_1100_idle_clients_do_not_lock_out_a_tunnel(
        tmp_path, pki, strict_server):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.fail(f"the hard open-file limit ({hard}) leaves no room above a soft 1024")
    _own_limit_at_least(1300)
    p = _start(tmp_path, pki, strict_server, 1024, hard)
    socks = _silent_sockets(p.port, 1100)
    try:
        assert _soft_limit(p.proc.pid) > 1024
        # every idle client accepted and holding a descriptor
        wait_for(lambda: _fds(p.proc.pid) >= 1100, 60, "1100 descriptors in use", interval=0.1)
        _good_tunnel(p.port, strict_server, pki)
        recs = p.records(1)
        assert [r["handshake"]["outcome"] for r in recs] == ["established"]
    finally:
        for s in socks:
            s.close()
    code, _, err = p.stop()
    assert code == 0 and len(err) < 500 and "Traceback" not in err, err[:2000]


def test_at_a_low_hard_limit_the_head_timeout_frees_descriptors_and_one_line_says_so(
        tmp_path, pki, strict_server):
    _own_limit_at_least(600)
    # 5 s: long enough for the proxy to accept 250 clients and run out before the first
    # of them is closed, on a slow machine too.
    p = _start(tmp_path, pki, strict_server, 256, 256, "--connect-head-timeout", "5")
    socks = _silent_sockets(p.port, 300)  # more than the proxy has: accept() runs out
    try:
        # The idle clients are closed 5 s after they were accepted; the ones waiting in the
        # listen queue get their turn, then this one (connect_tunnel waits up to 10 s).
        _good_tunnel(p.port, strict_server, pki)
        assert [r["handshake"]["outcome"] for r in p.records(1)] == ["established"]
        deadline = time.monotonic() + 30
        for s in socks:  # every silent client is closed by the proxy in its turn
            s.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                assert s.recv(1) == b""
            except ConnectionResetError:
                pass
    finally:
        for s in socks:
            s.close()
    code, out, err = p.stop()
    assert code == 0
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and "cannot accept connections: Too many open files" in lines[0], err[:3000]
    assert "open-file limit 256" in lines[0]
    # none of the silent clients is a record; each is counted
    assert "not recorded: head timeout 300" in out.splitlines()
    assert len(p.records(1, timeout=0.5)) == 1


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_request_head_that_never_ends_is_closed_counted_and_costs_no_memory(
        tmp_path, pki, strict_server):
    p = _start(tmp_path, pki, strict_server, *resource.getrlimit(resource.RLIMIT_NOFILE))
    _good_tunnel(p.port, strict_server, pki)  # warm: the first tunnel's imports are not the head's
    before = _rss_kb(p.proc.pid)
    line = b"X-Padding: " + b"a" * 1000 + b"\r\n"
    sent, closed = 0, None
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(b"CONNECT a.example:443 HTTP/1.1\r\n")
        try:
            while sent < 64 * 1024 * 1024:  # 64 MiB of header lines, unless closed first
                s.sendall(line * 64)
                sent += len(line) * 64
        except OSError as e:
            closed = e
        answer = b""
        try:
            answer = s.recv(200)
        except OSError:
            pass  # a reset may overtake the answer
    assert closed is not None, f"{sent} bytes of one request head were accepted"
    assert sent < 32 * 1024 * 1024
    assert answer in (b"", b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                      b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    assert _rss_kb(p.proc.pid) - before < 20_000
    _good_tunnel(p.port, strict_server, pki)  # and the proxy goes on
    # the second tunnel's record is written once the server, too, has ended it
    assert [r["handshake"]["outcome"] for r in p.records(2)] == ["established"] * 2
    code, out, err = p.stop()
    assert code == 0 and "Traceback" not in err
    assert "not recorded: head too large 1" in out.splitlines()


def test_unrecorded_counts_line():
    u = Unrecorded()
    assert u.line() is None and u.nonzero() == {}
    u.add("auth_refused")
    u.add("head_timeout")
    u.add("head_timeout")
    assert u.nonzero() == {"auth_refused": 1, "head_timeout": 2}
    assert u.line() == "not recorded: auth refused 1, head timeout 2"


def test_connect_head_timeout_must_be_positive():
    r = subprocess.run([sys.executable, "-m", "inspector.cli", "--headless", "--listen-port", "0",
                        "--connect-head-timeout", "0", "--duration", "1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--connect-head-timeout must be > 0 seconds" in r.stderr
