"""Chain verdicts through the real proxy: where the chain comes from (observed, probe,
intercept), the shared probe cache, --upstream-proxy, and the probe command."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from inspector.lab.http1 import connect_tunnel
from inspector.lab.server import TLSServer

from .support import HOST, env_without_proxy, require_tool, tls_through_proxy


def codes(rec):
    return sorted(f["code"] for f in rec["findings"])


def _mapped(server) -> tuple[str, str]:
    return "--connect-to", f"{HOST}:{server.port}:127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def tls12_server(pki):
    with TLSServer([pki["leaf"].cert], pki["leaf"].key, sni_names=[HOST],
                   max_version=ssl.TLSVersion.TLSv1_2) as s:
        yield s


def test_tls12_chain_is_read_from_the_relay_without_a_probe(start_proxy, tls12_server, pki):
    p = start_proxy(*_mapped(tls12_server), "--trust", pki["root_pem"])
    before = len(tls12_server.sni_seen)
    with tls_through_proxy(p.port, HOST, tls12_server.port, cafile=pki["root_pem"], sni=HOST):
        pass
    rec = p.records(1)[0]
    assert rec["handshake"]["version"] == "TLSv1.2"
    assert rec["chain"]["source"] == "observed"
    assert [c["sha256"] for c in rec["chain"]["certificates"]] == [pki["leaf_sha256"]]
    assert rec["chain"]["profiles"][pki["root_pem"]]["trusted"] is True
    assert rec["flagged"] is False
    assert len(tls12_server.sni_seen) - before == 1  # the tunnel only: no probe


def test_tls13_chain_comes_from_one_shared_probe_for_50_tunnels(start_proxy, strict_server, pki):
    p = start_proxy(*_mapped(strict_server), "--trust", pki["root_pem"])
    before = len(strict_server.sni_seen)
    ctx = ssl.create_default_context(cafile=pki["root_pem"])

    def one(_):
        with ctx.wrap_socket(connect_tunnel(p.port, HOST, strict_server.port), server_hostname=HOST):
            return True

    with concurrent.futures.ThreadPoolExecutor(50) as ex:
        assert all(ex.map(one, range(50)))
    recs = p.records(50, timeout=30)
    assert len(recs) == 50
    assert {r["chain"]["source"] for r in recs} == {"probe"}
    assert all(r["flagged"] is False for r in recs)
    assert len(strict_server.sni_seen) - before == 51  # 50 tunnels + exactly one probe


def test_no_probe_leaves_tls13_chain_unknown(start_proxy, strict_server, pki):
    p = start_proxy(*_mapped(strict_server), "--trust", pki["root_pem"], "--no-probe")
    before = len(strict_server.sni_seen)
    with tls_through_proxy(p.port, HOST, strict_server.port, cafile=pki["root_pem"], sni=HOST):
        pass
    rec = p.records(1)[0]
    assert rec["chain"] is None and rec["flagged"] is False
    assert len(strict_server.sni_seen) - before == 1


def test_untrusted_chain_against_default_mozilla_store(start_proxy, strict_server, pki):
    p = start_proxy(*_mapped(strict_server), "--trust", "mozilla")  # the CLI's default
    with tls_through_proxy(p.port, HOST, strict_server.port, cafile=pki["root_pem"], sni=HOST):
        pass
    rec = p.records(1)[0]
    assert rec["handshake"]["outcome"] == "established"
    assert rec["chain"]["profiles"]["mozilla"]["trusted"] is False
    assert "untrusted" in codes(rec) and rec["flagged"] is True


def test_missing_sni_to_sni_only_server_is_sni_required(start_proxy, strict_server, pki):
    """Incident 2: the tunnel fails without SNI; a probe with the CONNECT host works."""
    openssl = require_tool("openssl")
    p = start_proxy(*_mapped(strict_server), "--trust", pki["root_pem"])
    subprocess.run([openssl, "s_client", "-proxy", p.url, "-connect", f"{HOST}:{strict_server.port}",
                    "-noservername"], input="", capture_output=True, timeout=20)
    rec = p.records(1)[0]
    assert codes(rec) == ["server-alert", "sni-missing", "sni-required"]
    req = next(f for f in rec["findings"] if f["code"] == "sni-required")
    assert f"with SNI {HOST} it works" in req["message"]
    assert "must send SNI" in req["hint"]
    # the chain the server serves for the right name is judged too
    assert rec["chain"]["source"] == "probe"
    assert rec["chain"]["profiles"][pki["root_pem"]]["trusted"] is True


def test_intercept_mode_sends_exactly_the_clients_sni(start_proxy, strict_server, pki, tmp_path):
    curl, openssl = require_tool("curl"), require_tool("openssl")
    confdir = tmp_path / "mitm"
    p = start_proxy(*_mapped(strict_server), "--trust", pki["root_pem"], "--intercept",
                    "--confdir", str(confdir))
    assert oct(confdir.stat().st_mode & 0o777) == "0o700"
    ca = confdir / "mitmproxy-ca-cert.pem"
    r = subprocess.run([curl, "-sS", "--max-time", "10", "--cacert", str(ca), "-x", p.url,
                        f"https://{HOST}:{strict_server.port}/"], capture_output=True, text=True,
                       env=env_without_proxy(), timeout=20)
    assert r.returncode == 0 and r.stdout == "ok\n", r.stderr
    before = len(strict_server.sni_seen)
    subprocess.run([openssl, "s_client", "-proxy", p.url, "-connect", f"{HOST}:{strict_server.port}",
                    "-noservername", "-CAfile", str(ca)], input="", capture_output=True, timeout=20)
    recs = p.records(2)
    good, nosni = recs
    assert good["handshake"]["outcome"] == "established"
    assert good["chain"]["source"] == "intercept" and good["flagged"] is False
    # mitmproxy's default would have sent the CONNECT host; the server saw no SNI at all
    assert strict_server.sni_seen[before] is None
    assert nosni["handshake"]["outcome"] == "server-alert"
    assert "sni-missing" in codes(nosni) and "sni-required" in codes(nosni)


def test_intercept_client_without_the_ca(start_proxy, strict_server, pki, tmp_path):
    curl = require_tool("curl")
    p = start_proxy(*_mapped(strict_server), "--trust", pki["root_pem"], "--intercept",
                    "--confdir", str(tmp_path / "mitm"))
    r = subprocess.run([curl, "-sS", "--max-time", "10", "-x", p.url,
                        f"https://{HOST}:{strict_server.port}/"], capture_output=True, text=True,
                       env=env_without_proxy(), timeout=20)
    assert r.returncode == 60
    rec = p.records(1)[0]
    f = next(f for f in rec["findings"] if f["code"] == "client-rejected-certificate")
    assert "proxy's certificate" in f["message"] and "mitmproxy's CA" in f["hint"]


def test_upstream_proxy_carries_tunnels_and_probes(start_proxy, strict_server, pki):
    inner = start_proxy(*_mapped(strict_server), "--trust", pki["root_pem"], "--no-probe")
    outer = start_proxy("--trust", pki["root_pem"], "--upstream-proxy", f"http://{inner.url}")
    with tls_through_proxy(outer.port, HOST, strict_server.port, cafile=pki["root_pem"], sni=HOST):
        pass
    rec = outer.records(1)[0]
    assert rec["upstream"]["address"] == inner.url  # the outer proxy dialled the inner one
    assert rec["handshake"]["outcome"] == "established"
    assert rec["chain"]["source"] == "probe"  # the probe went through the inner proxy too
    assert rec["flagged"] is False
    inner_recs = inner.records(2)
    assert len(inner_recs) == 2 and {r["sni"] for r in inner_recs} == {HOST}


def _probe_cli(*args):
    return subprocess.run([sys.executable, "-m", "inspector.cli", "probe", *args],
                          capture_output=True, text=True, timeout=30)


def test_probe_command_exit_codes(strict_server, pki):
    target = f"{HOST}:{strict_server.port}"
    mapping = f"{target}:127.0.0.1:{strict_server.port}"
    clean = _probe_cli(target, "--connect-to", mapping, "--trust", pki["root_pem"])
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "findings   none" in clean.stdout
    flagged = _probe_cli(target, "--connect-to", mapping, "--trust", pki["root_pem"], "--no-sni", "--json")
    assert flagged.returncode == 1
    rec = json.loads(flagged.stdout)
    assert "sni-required" in codes(rec) and rec["sni"] is None
    dead = _probe_cli("127.0.0.1:1", "--trust", pki["root_pem"])
    assert dead.returncode == 2 and "could not probe" in dead.stderr
    bad = _probe_cli(target, "--trust", "/nonexistent.pem")
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_bad_trust_store_is_exit_2(tmp_path):
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    r = subprocess.run([sys.executable, "-m", "inspector.cli", "--headless", "--listen-port", "0",
                        "--trust", str(empty), "--duration", "5"], capture_output=True, text=True,
                       timeout=20)
    assert r.returncode == 2 and "no PEM certificates" in r.stderr
    assert "Traceback" not in r.stderr


def test_client_profile_name_is_used(start_proxy, strict_server, pki):
    p = start_proxy(*_mapped(strict_server), "--trust", pki["root_pem"],
                    "--client", f"old-phone={Path(pki['root_pem'])}")
    with tls_through_proxy(p.port, HOST, strict_server.port, cafile=pki["root_pem"], sni=HOST):
        pass
    rec = p.records(1)[0]
    assert rec["chain"]["profiles"]["old-phone"]["trusted"] is True
    assert rec["chain"]["profiles"]["old-phone"]["kind"] == "client"


def test_an_upstream_proxys_refusal_is_a_connect_failure(start_proxy, pki):
    """Through --upstream-proxy the client gets its 200 before the upstream answers; a
    502 from the upstream proxy is recorded as connect-failed with its status line."""
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the inner proxy answers 502
    inner = start_proxy("--no-probe")
    outer = start_proxy("--no-probe", "--upstream-proxy", f"http://{inner.url}")
    with pytest.raises(OSError):
        with tls_through_proxy(outer.port, "127.0.0.1", port, cafile=pki["root_pem"], sni=HOST):
            pass
    rec = outer.records(1)[0]
    assert rec["handshake"]["outcome"] == "connect-failed", rec["handshake"]
    assert "502" in rec["handshake"]["detail"]
    assert [f["code"] for f in rec["findings"]] == ["upstream-unreachable"]
    assert inner.records(1)[0]["handshake"]["outcome"] == "connect-failed"
