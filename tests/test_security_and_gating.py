"""Security defaults, CI gating (--fail-on, --export-flagged) and crash safety."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys

from inspector.lab.http1 import connect_tunnel
from inspector.records.jsonl import JsonlReader, Problem

from .support import HOST, tls_through_proxy, wait_for


def _cli(*args, env=None, timeout=30):
    return subprocess.run([sys.executable, "-m", "inspector.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_non_loopback_listen_needs_auth_or_allow_remote():
    r = _cli("--headless", "--listen-host", "0.0.0.0", "--listen-port", "0", "--duration", "1")
    assert r.returncode == 2
    assert "--proxy-auth" in r.stderr and "--allow-remote" in r.stderr
    assert "listening on" not in r.stdout


def test_allow_remote_warns(tmp_path):
    # 192.0.2.1 (TEST-NET) is on no interface here: the bind fails after the warning,
    # so nothing is ever exposed by this test.
    r = _cli("--headless", "--listen-host", "192.0.2.1", "--allow-remote", "--listen-port", "0",
             "--duration", "1")
    assert "warning: listening on 192.0.2.1" in r.stderr and "no authentication" in r.stderr
    assert r.returncode == 2 and "cannot listen on 192.0.2.1" in r.stderr


def test_proxy_auth_is_enforced(start_proxy, strict_server, pki):
    port = strict_server.port
    p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}", "--proxy-auth", "u:secret",
                    "--no-probe")
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(f"CONNECT {HOST}:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert s.recv(100).startswith(b"HTTP/1.1 407")
    token = base64.b64encode(b"u:secret").decode()
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(f"CONNECT {HOST}:{port} HTTP/1.1\r\nHost: x\r\n"
                  f"Proxy-Authorization: Basic {token}\r\n\r\n".encode())
        assert s.recv(100).startswith(b"HTTP/1.1 200")
        ctx = ssl.create_default_context(cafile=pki["root_pem"])
        with ctx.wrap_socket(s, server_hostname=HOST):
            pass
    p.records(1)
    # Once the proxy has stopped, every record it will ever write is written.
    code, _, err = p.stop()
    recs = p.records(1)
    assert len(recs) == 1 and recs[0]["handshake"]["outcome"] == "established"
    # no record for the refused attempt, but it is not silent either
    assert code == 0
    assert f"CONNECT {HOST}:{port} answered 407 (--proxy-auth)" in err


def test_files_are_private_and_passthrough_writes_no_ca(tmp_path, strict_server, pki):
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    jsonl, export = tmp_path / "t.jsonl", tmp_path / "flagged.json"
    port = strict_server.port
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector.cli", "--headless", "--listen-port", "0",
         "--jsonl", str(jsonl), "--export-flagged", str(export), "--no-probe",
         "--connect-to", f"{HOST}:{port}:127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        proxy_port = int(proc.stdout.readline().rsplit(":", 1)[1])
        try:  # no CA given: the client rejects the lab chain, a flagged tunnel
            with tls_through_proxy(proxy_port, HOST, port, cafile=None, sni=HOST):
                pass
        except ssl.SSLError:
            pass
        wait_for(lambda: jsonl.exists() and jsonl.read_text(), 10, "the record")
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert stat.S_IMODE(jsonl.stat().st_mode) == 0o600
    assert stat.S_IMODE(export.stat().st_mode) == 0o600
    doc = json.loads(export.read_text())
    assert doc["schema"] == 1 and len(doc["tunnels"]) == 1
    assert doc["tunnels"][0]["findings"][0]["code"] == "client-rejected-certificate"
    assert "exported 1 flagged tunnel " in out
    assert not (home / ".mitmproxy").exists()  # passthrough: no CA, no key material


def test_fail_on_error_exits_1_and_lists_hosts(start_proxy, strict_server, pki, tmp_path):
    port = strict_server.port
    p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}", "--fail-on", "error",
                    "--no-probe")
    try:
        with tls_through_proxy(p.port, HOST, port, cafile=None, sni=HOST):
            pass
    except ssl.SSLError:
        pass
    p.records(1)
    code, out, _ = p.stop()
    assert code == 1
    assert "failing (--fail-on error): 1 host\n" in out
    assert f"{HOST}:{port}  client-rejected-certificate" in out


def test_fail_on_warning_passes_a_clean_run(start_proxy, strict_server, pki):
    port = strict_server.port
    p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}", "--fail-on", "warning")
    with tls_through_proxy(p.port, HOST, port, cafile=pki["root_pem"], sni=HOST):
        pass
    p.records(1)
    code, out, _ = p.stop()
    assert code == 0 and "failing" not in out


def test_kill_9_leaves_whole_lines_and_open_reports_a_torn_tail(start_proxy, strict_server, pki):
    port = strict_server.port
    p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}", "--no-probe")
    ctx = ssl.create_default_context(cafile=pki["root_pem"])
    socks = []
    for i in range(30):
        with ctx.wrap_socket(connect_tunnel(p.port, HOST, port), server_hostname=HOST):
            pass
        if i % 10 == 0:  # some tunnels still open when the proxy dies
            socks.append(connect_tunnel(p.port, HOST, port))
    p.records(30)
    os.kill(p.proc.pid, signal.SIGKILL)
    p.proc.wait(10)
    for s in socks:
        s.close()
    lines = p.jsonl.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends on a newline: every line is whole
    assert all(json.loads(x)["schema"] == 1 for x in lines[:-1])
    # a hard kill in the middle of a write would leave a torn line: open reports it
    with open(p.jsonl, "ab") as f:
        f.write(lines[0][: len(lines[0]) // 2])
    with JsonlReader(p.jsonl) as reader:
        items = list(reader.read(final=True))
    problems = [x for x in items if isinstance(x, Problem)]
    assert len(items) - len(problems) == len(lines) - 1
    assert len(problems) == 1 and problems[0].line == len(lines)


def _client_hello() -> bytes:
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ssl.create_default_context().wrap_bio(inc, out, server_hostname="evil.example")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def test_with_proxy_auth_nothing_unauthenticated_becomes_a_record(start_proxy, strict_server, pki):
    """Garbage, TLS to the proxy, a bad CONNECT line, a CONNECT into the proxy itself, all
    without credentials: counted as refused, no record, nothing for --fail-on to fail on."""
    port = strict_server.port
    p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}", "--proxy-auth", "u:secret",
                    "--no-probe", "--fail-on", "error")
    strangers = [
        b"GARBAGE \x1b[31m<evil.example> HTTP/1.1\r\n\r\n",
        b"CONNECT evil.example:99999 HTTP/1.1\r\nHost: x\r\n\r\n",
        _client_hello(),
        f"CONNECT 127.1:{p.port} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    ]
    for data in strangers:
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            s.sendall(data)
            s.settimeout(1)
            try:
                answer = s.recv(100)
            except TimeoutError:
                answer = b""
            assert not answer.startswith(b"HTTP/1.1 508")  # the loop guard says nothing either
    token = base64.b64encode(b"u:secret").decode()
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
        s.sendall(f"CONNECT {HOST}:{port} HTTP/1.1\r\nHost: x\r\n"
                  f"Proxy-Authorization: Basic {token}\r\n\r\n".encode())
        assert s.recv(100).startswith(b"HTTP/1.1 200")
        with ssl.create_default_context(cafile=pki["root_pem"]).wrap_socket(s, server_hostname=HOST):
            pass
    p.records(1)
    code, out, err = p.stop()
    recs = p.records(1, timeout=0.5)
    assert [r["connect"]["host"] for r in recs] == [HOST]
    assert code == 0, out  # --fail-on error: no stranger's request made a failing record
    assert "not recorded: auth refused 4" in out.splitlines()
    assert "evil.example" not in out + err
