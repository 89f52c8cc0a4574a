"""Real clients through the real listening proxy to real TLS servers on 127.0.0.1."""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import os
import signal
import socket
import ssl
import subprocess
import sys

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from inspector.lab.http1 import connect_tunnel
from inspector.lab.pki import make_cert
from inspector.lab.server import TLSServer

from .support import HOST, env_without_proxy, require_tool, tls_through_proxy, wait_for


def codes(record):
    return sorted(f["code"] for f in record["findings"])


def only(records):
    assert len(records) == 1, records
    return records[0]


def test_curl_with_sni_is_established_and_clean(start_proxy, strict_server, pki):
    curl = require_tool("curl")
    p = start_proxy("--connect-to", f"{HOST}:{strict_server.port}:127.0.0.1:{strict_server.port}")
    r = subprocess.run([curl, "-sS", "--max-time", "10", "--cacert", pki["root_pem"],
                        "-x", p.url, f"https://{HOST}:{strict_server.port}/"],
                       capture_output=True, text=True, env=env_without_proxy(), timeout=20)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    rec = only(p.records(1))
    assert rec["schema"] == 1
    assert rec["connect"] == {"host": HOST, "port": strict_server.port}
    assert rec["upstream"] == {"address": f"127.0.0.1:{strict_server.port}"}
    assert rec["sni"] == HOST
    assert rec["handshake"]["outcome"] == "established"
    assert rec["handshake"]["version"] == "TLSv1.3"
    assert rec["handshake"]["alert"] is None
    assert "http/1.1" in rec["client_hello"]["alpn"]
    assert rec["findings"] == [] and rec["flagged"] is False


def test_ipv6_loopback_addresses_are_written_in_brackets(start_proxy, pki):
    """`::1:443` reads as nothing: the listening line, the tunnel line, the record and
    the --fail-on list all write an IPv6 address as a URL does."""
    curl = require_tool("curl")
    with TLSServer([pki["leaf"].cert], pki["leaf"].key, host="::1") as server:
        p = start_proxy("--listen-host", "::1", "--fail-on", "warning")
        assert p.first_line == f"listening on [::1]:{p.port}\n"
        r = subprocess.run([curl, "-sS", "-k", "--max-time", "10", "-x", f"http://[::1]:{p.port}",
                            f"https://[::1]:{server.port}/"],
                           capture_output=True, text=True, env=env_without_proxy(), timeout=20)
        assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
        rec = only(p.records(1))
        code, out, _ = p.stop()
    assert rec["connect"] == {"host": "::1", "port": server.port}
    assert rec["upstream"] == {"address": f"[::1]:{server.port}"}
    assert rec["client"].startswith("[::1]:") and rec["sni"] is None
    assert "connect-ip" in codes(rec) and rec["handshake"]["outcome"] == "established"
    assert f"CONNECT [::1]:{server.port}  SNI: (none)  established" in out
    assert code == 1 and f"  [::1]:{server.port}  " in out


def test_curl_through_a_hello_retry_request_is_established(start_proxy, pki):
    """curl's first key share is X25519; this server takes only P-384 and asks again."""
    curl = require_tool("curl")
    with TLSServer([pki["leaf"].cert], pki["leaf"].key, curve="secp384r1") as server:
        port = server.port
        p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}")
        r = subprocess.run([curl, "-sS", "--max-time", "10", "--cacert", pki["root_pem"],
                            "--curves", "X25519:P-384", "-x", p.url, f"https://{HOST}:{port}/"],
                           capture_output=True, text=True, env=env_without_proxy(), timeout=20)
        assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
        rec = only(p.records(1))
    assert rec["handshake"]["outcome"] == "established"
    assert rec["handshake"]["version"] == "TLSv1.3"
    assert rec["sni"] == HOST and rec["findings"] == [] and rec["flagged"] is False


def test_curl_to_a_server_that_requires_a_client_certificate(start_proxy, pki, tmp_path):
    """Mutual TLS over TLS 1.3: without a certificate the server's refusal is encrypted,
    after a client Finished that would otherwise pass for success."""
    curl = require_tool("curl")
    ca = make_cert("Client CA", ca=True)
    client = make_cert("client one", ca, usage=(ExtendedKeyUsageOID.CLIENT_AUTH,))
    (tmp_path / "client.pem").write_bytes(client.pem)
    (tmp_path / "client.key").write_bytes(client.key_pem)
    with TLSServer([pki["leaf"].cert], pki["leaf"].key, client_ca=ca.pem) as server:
        port = server.port
        p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}")

        def fetch(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([curl, "-sS", "--max-time", "10", "--cacert", pki["root_pem"],
                                   *args, "-x", p.url, f"https://{HOST}:{port}/"],
                                  capture_output=True, text=True, env=env_without_proxy(), timeout=20)

        refused = fetch()
        assert refused.returncode != 0 and "certificate required" in refused.stderr
        rec = only(p.records(1))
        accepted = fetch("--cert", str(tmp_path / "client.pem"), "--key", str(tmp_path / "client.key"))
        assert accepted.returncode == 0 and accepted.stdout == "ok\n", accepted.stderr
        good = p.records(2)[1]
    assert rec["handshake"]["outcome"] == "server-alert"
    assert rec["handshake"]["alert"] == {"from": "server", "code": None, "description": "encrypted"}
    (f,) = rec["findings"]
    assert f["code"] == "server-alert" and "requires a client certificate" in f["message"]
    assert good["handshake"]["outcome"] == "established" and good["findings"] == []


def test_openssl_without_sni_shows_incident_two(start_proxy, strict_server):
    openssl = require_tool("openssl")
    port = strict_server.port
    p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}")
    r = subprocess.run([openssl, "s_client", "-proxy", p.url, "-connect", f"{HOST}:{port}",
                        "-noservername"], input="", capture_output=True, text=True, timeout=20)
    assert "unrecognized name" in r.stderr  # the client's own view: a bare alert
    rec = only(p.records(1))
    assert rec["sni"] is None and rec["client_hello"]["sni_present"] is False
    assert rec["handshake"]["outcome"] == "server-alert"
    assert rec["handshake"]["alert"] == {"from": "server", "code": 112,
                                         "description": "unrecognized_name"}
    assert codes(rec) == ["server-alert", "sni-missing", "sni-required"]
    assert rec["flagged"] is True
    # the one headless line says it all
    code, out, _ = p.stop()
    assert code == 0
    line = next(x for x in out.splitlines() if "CONNECT" in x)
    assert f"CONNECT {HOST}:{port}  SNI: (none)  server alert: unrecognized_name" in line
    assert "sni-missing" in line


def test_openssl_with_other_servername_is_a_mismatch(start_proxy, strict_server):
    openssl = require_tool("openssl")
    port = strict_server.port
    p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}")
    subprocess.run([openssl, "s_client", "-proxy", p.url, "-connect", f"{HOST}:{port}",
                    "-servername", "other.lab.test"], input="", capture_output=True, timeout=20)
    rec = only(p.records(1))
    assert rec["sni"] == "other.lab.test"
    assert rec["handshake"]["alert"]["description"] == "unrecognized_name"
    # the chain stage adds: the server works with the CONNECT host, whose certificate
    # does not cover the name the client sent
    assert codes(rec) == ["hostname-mismatch", "server-alert", "sni-mismatch", "sni-required"]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_python_ssl_client(start_proxy, strict_server, pki, version):
    port = strict_server.port
    p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}")
    ctx = ssl.create_default_context(cafile=pki["root_pem"])
    ctx.maximum_version = version
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with ctx.wrap_socket(connect_tunnel(p.port, HOST, port), server_hostname=HOST) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")
    rec = only(p.records(1))
    assert rec["handshake"]["outcome"] == "established"
    assert rec["handshake"]["version"] == {ssl.TLSVersion.TLSv1_3: "TLSv1.3",
                                           ssl.TLSVersion.TLSv1_2: "TLSv1.2"}[version]
    assert rec["client_hello"]["alpn"] == ["h2", "http/1.1"]
    assert rec["flagged"] is False


@pytest.mark.parametrize("tls_max", ["1.3", "1.2"])
def test_client_rejecting_the_certificate(start_proxy, strict_server, tls_max):
    curl = require_tool("curl")
    port = strict_server.port
    p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}")
    # no --cacert: the lab root is unknown to curl's default store
    r = subprocess.run([curl, "-sS", "--max-time", "10", "--tls-max", tls_max, "-x", p.url,
                        f"https://{HOST}:{port}/"], capture_output=True, text=True,
                       env=env_without_proxy(), timeout=20)
    assert r.returncode == 60, r.stderr
    rec = only(p.records(1))
    assert rec["handshake"]["outcome"] == "client-alert"
    assert rec["handshake"]["alert"] == {"from": "client", "code": 48, "description": "unknown_ca"}
    assert codes(rec) == ["client-rejected-certificate"]


def test_refused_upstream_port(start_proxy):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    p = start_proxy()
    with pytest.raises(ConnectionError, match="502"):
        connect_tunnel(p.port, "127.0.0.1", dead)
    rec = only(p.records(1))
    assert rec["handshake"]["outcome"] == "connect-failed"
    assert "refused" in rec["handshake"]["detail"].lower()
    assert rec["upstream"] is None and rec["client_hello"] is None
    assert "upstream-unreachable" in codes(rec)
    assert rec["flagged"] is True


def test_plaintext_inside_a_tunnel(start_proxy, strict_server):
    port = strict_server.port
    p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}")
    with connect_tunnel(p.port, HOST, port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        s.recv(100)
    rec = only(p.records(1))
    assert rec["handshake"]["outcome"] == "not-tls"
    assert rec["client_hello"] is None
    assert codes(rec) == ["not-tls"]


def test_connect_to_reaches_the_mapped_upstream_and_keeps_sni(start_proxy, strict_server, pki):
    port = strict_server.port
    p = start_proxy("--connect-to", f"{HOST}:443:127.0.0.1:{port}", "--no-probe")
    before = len(strict_server.sni_seen)
    with tls_through_proxy(p.port, HOST, 443, cafile=pki["root_pem"], sni=HOST):
        pass
    rec = only(p.records(1))
    assert rec["connect"] == {"host": HOST, "port": 443}
    assert rec["upstream"]["address"] == f"127.0.0.1:{port}"
    assert strict_server.sni_seen[before:] == [HOST]  # the server got the client's SNI
    assert rec["handshake"]["outcome"] == "established"


def test_bytes_pass_through_unmodified(start_proxy, echo_server, pki):
    port = echo_server.port
    p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}")
    payload = os.urandom(256 * 1024)
    with tls_through_proxy(p.port, HOST, port, cafile=pki["root_pem"], sni=HOST) as s:
        s.sendall(payload)
        got = bytearray()
        while len(got) < len(payload):
            chunk = s.recv(65536)
            assert chunk, "tunnel closed early"
            got += chunk
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert only(p.records(1))["handshake"]["outcome"] == "established"


def test_raw_tcp_bytes_both_ways_are_identical(start_proxy):
    """Below TLS: random bytes (not a ClientHello) through the tunnel, both directions."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    payload = os.urandom(64 * 1024)
    p = start_proxy()
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        def serve():
            srv.settimeout(10)
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(10)
                data = bytearray()
                while len(data) < len(payload):
                    data += conn.recv(65536)
                conn.sendall(bytes(reversed(data)))
                return hashlib.sha256(data).hexdigest()
        fut = ex.submit(serve)
        with connect_tunnel(p.port, "127.0.0.1", port) as s:
            s.sendall(payload)
            back = bytearray()
            while len(back) < len(payload):
                back += s.recv(65536)
        assert fut.result(15) == hashlib.sha256(payload).hexdigest()
        assert bytes(back) == bytes(reversed(payload))
    srv.close()


def test_200_tunnels_20_at_a_time_give_200_records(start_proxy, strict_server, pki):
    port = strict_server.port
    p = start_proxy("--connect-to", f"{HOST}:{port}:127.0.0.1:{port}")
    ctx = ssl.create_default_context(cafile=pki["root_pem"])

    def one(i):
        sni = HOST if i % 4 else None  # every 4th sends no SNI and is refused
        c = ctx if sni else _no_sni_ctx()
        raw = connect_tunnel(p.port, HOST, port)
        client = "%s:%d" % raw.getsockname()[:2]
        try:
            with c.wrap_socket(raw, server_hostname=sni):
                return "ok", client
        except ssl.SSLError:
            return "refused", client

    with concurrent.futures.ThreadPoolExecutor(20) as ex:
        results = list(ex.map(one, range(200)))
    assert [r for r, _ in results].count("refused") == 50
    recs = p.records(200, timeout=30)
    assert len(recs) == 200
    assert len({r["id"] for r in recs}) == 200
    # Each record names its own client. The kernel may hand a closed tunnel's
    # ephemeral port to a later client, so compare as multisets, not as a set.
    assert collections.Counter(r["client"] for r in recs) == collections.Counter(c for _, c in results)
    assert sum(r["handshake"]["outcome"] == "established" for r in recs) == 150
    assert sum("sni-missing" in codes(r) for r in recs) == 50
    code, out, _ = p.stop()
    assert code == 0
    assert out.strip().splitlines()[-1].startswith("200 tunnels, 50 flagged")


def _no_sni_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_sigterm_writes_open_tunnels_and_prints_summary(start_proxy):
    srv = socket.create_server(("127.0.0.1", 0))  # accepts TCP, never speaks TLS
    p = start_proxy()
    s = connect_tunnel(p.port, "127.0.0.1", srv.getsockname()[1])
    code, out, _ = p.stop()
    s.close()
    srv.close()
    assert code == 0
    assert out.strip().splitlines()[-1].startswith("1 tunnel, 1 flagged")
    rec = only(p.records(1, timeout=1))
    assert rec["handshake"]["outcome"] == "closed"
    assert "proxy stopped" in rec["handshake"]["detail"]


def test_handshake_timeout_is_recorded(start_proxy):
    srv = socket.create_server(("127.0.0.1", 0))
    p = start_proxy("--handshake-timeout", "0.5", "--no-probe")
    with tls_through_proxy_nowait(p.port, srv.getsockname()[1]):
        rec = only(p.records(1, timeout=5))
    srv.close()
    assert rec["handshake"]["outcome"] == "timeout"
    assert rec["client_hello"] is not None  # the hello went out; the server never answered
    assert "handshake-aborted" in codes(rec)


class tls_through_proxy_nowait:
    """Send a real ClientHello into a tunnel and leave the handshake hanging."""

    def __init__(self, proxy_port, port):
        self.sock = connect_tunnel(proxy_port, "127.0.0.1", port)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ssl.create_default_context().wrap_bio(inc, out, server_hostname="stall.lab.test")
        with pytest.raises(ssl.SSLWantReadError):
            obj.do_handshake()
        self.sock.sendall(out.read())

    def __enter__(self):
        return self.sock

    def __exit__(self, *exc):
        self.sock.close()


def _run_cli(*args, timeout=20):
    return subprocess.run([sys.executable, "-m", "inspector.cli", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_port_in_use_is_one_sentence_and_exit_2():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = _run_cli("--headless", "--listen-port", str(port), "--duration", "5")
    assert r.returncode == 2
    assert r.stderr == f"tunnel-inspector: port {port} is in use: pick another with --listen-port\n"
    assert "Traceback" not in r.stderr and "listening on" not in r.stdout


@pytest.mark.parametrize("spec", ["a.example:443", "a:b:c:d", "a:443:b:70000"])
def test_bad_connect_to_is_exit_2(spec):
    r = _run_cli("--headless", "--listen-port", "0", "--connect-to", spec, "--duration", "5")
    assert r.returncode == 2
    assert "--connect-to" in r.stderr and "Traceback" not in r.stderr
    assert "listening on" not in r.stdout


def _listening_addresses(port: int) -> list[str]:
    """Local addresses of LISTEN sockets on `port`, from the kernel's own tables."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, hexport = local.split(":")
                if state == "0A" and int(hexport, 16) == port:  # 0A = LISTEN
                    found.append(addr)
    return found


def test_default_bind_is_loopback_only(start_proxy):
    p = start_proxy()
    # 0100007F is 127.0.0.1 in the kernel's little-endian hex; nothing on :: or 0.0.0.0
    assert _listening_addresses(p.port) == ["0100007F"]


def test_sigint_also_exits_cleanly(start_proxy):
    p = start_proxy()
    code, out, err = p.stop(signal.SIGINT)
    assert code == 0 and "Traceback" not in err
    assert out.strip().splitlines()[-1] == "0 tunnels, 0 flagged"


def test_addon_runs_standalone_under_mitmdump(tmp_path, strict_server, pki):
    """`mitmdump -s addons/tunnel_inspector.py` records tunnels without our CLI."""
    import re
    import time
    from pathlib import Path

    mitmdump = Path(sys.executable).with_name("mitmdump")
    script = Path(__file__).resolve().parents[1] / "addons" / "tunnel_inspector.py"
    jsonl = tmp_path / "md.jsonl"
    port = strict_server.port
    proc = subprocess.Popen(
        [str(mitmdump), "-s", str(script), "--listen-host", "127.0.0.1", "--listen-port", "0",
         "--set", f"inspector_jsonl={jsonl}",
         "--set", f"inspector_connect_to={HOST}:{port}:127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 15
        proxy_port = None
        while proxy_port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert "error" not in line.lower(), line
            if m := re.search(r"listening at 127\.0\.0\.1:(\d+)", line):
                proxy_port = int(m.group(1))
        assert proxy_port, "mitmdump did not start"
        with tls_through_proxy(proxy_port, HOST, port, cafile=pki["root_pem"], sni=HOST):
            pass
        wait_for(lambda: jsonl.exists() and jsonl.read_text(), 10, "the record")
        import json
        rec = json.loads(jsonl.read_text().splitlines()[0])
        assert rec["sni"] == HOST and rec["handshake"]["outcome"] == "established"
    finally:
        proc.terminate()
        proc.wait(10)
