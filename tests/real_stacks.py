"""Drive the real TLS stacks installed on this machine through the proxy: each stack's
client runs a list of cases (host, SNI, highest TLS version) and reports, per case,
whether it got an HTTP answer or the error it saw.

Go, Node, Java and Erlang/OTP run all their cases in one process (tests/stacks/);
curl, openssl s_client and gnutls-cli run once per case; Python runs in-process.
gnutls-cli has no proxy support: it connects to a local forwarder that opens the
CONNECT tunnel for it, as an app's own proxy code would.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from inspector.lab.http1 import connect_tunnel, read_head

DRIVERS = Path(__file__).parent / "stacks"
RUN_TIMEOUT = 120  # seconds for one stack's whole list of cases
CASE_TIMEOUT = 20


@dataclass(frozen=True)
class Case:
    id: str
    host: str  # the CONNECT host
    port: int  # the CONNECT port: unique per stack and case, mapped by --connect-to
    sni: str | None  # None: the client is made to send no SNI
    max_version: str  # "1.2" or "1.3"
    cafile: str


@dataclass(frozen=True)
class Result:
    ok: bool  # the client got its HTTP 200 over TLS
    error: str


class ToolMissing(Exception):
    """A stack's tool is not installed (.ci/run installs them)."""


def _need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise ToolMissing(f"{tool} is not installed; .ci/run installs it")
    return path


def _lines(cases: list[Case], proxy_port: int) -> str:
    return "".join(f"{c.id}\t{proxy_port}\t{c.host}\t{c.port}\t{c.sni or '-'}\t{c.cafile}\t"
                   f"{c.max_version}\n" for c in cases)


def _parse(out: str, cases: list[Case], err: str) -> dict[str, Result]:
    results = {}
    for line in out.splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3:
            results[parts[0]] = Result(parts[1] == "ok", parts[2])
    missing = [c.id for c in cases if c.id not in results]
    if missing:
        raise AssertionError(f"no result for {missing}: stdout {out[-500:]!r} stderr {err[-2000:]!r}")
    return results


def _batch(argv: list[str], cases: list[Case], proxy_port: int, env=None) -> dict[str, Result]:
    r = subprocess.run(argv, input=_lines(cases, proxy_port), capture_output=True, text=True,
                       timeout=RUN_TIMEOUT, env=env)
    return _parse(r.stdout, cases, r.stderr)


def build_go(tmpdir: Path) -> Path:
    go = _need("go")
    exe = tmpdir / "stack-client-go"
    # a cold build cache costs ~5 s: Debian's Go ships the standard library compiled
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmpdir), "GOCACHE": str(tmpdir / "gocache"),
           "GO111MODULE": "off", "CGO_ENABLED": "0"}
    r = subprocess.run([go, "build", "-o", str(exe), str(DRIVERS / "client.go")],
                       capture_output=True, text=True, timeout=300, env=env)
    if r.returncode != 0:
        raise AssertionError(f"go build failed: {r.stderr}")
    return exe


def run_go(cases, proxy_port, tmpdir):
    return _batch([str(build_go(tmpdir))], cases, proxy_port)


def run_node(cases, proxy_port, tmpdir):
    return _batch([_need("node"), str(DRIVERS / "client.js")], cases, proxy_port)


def run_java(cases, proxy_port, tmpdir):
    # -Xshare:auto -XX:TieredStopAtLevel=1: a short-lived JVM starts faster
    return _batch([_need("java"), "-XX:TieredStopAtLevel=1", "-Xshare:auto",
                   str(DRIVERS / "StackClient.java")], cases, proxy_port)


def run_erlang(cases, proxy_port, tmpdir):
    _need("erl")
    return _batch([_need("escript"), str(DRIVERS / "stack_client.escript")], cases, proxy_port)


def run_curl(cases, proxy_port, tmpdir):
    curl = _need("curl")
    out = {}
    for c in cases:
        if c.sni != c.host:
            raise AssertionError("curl sends the URL's host as SNI: no other case for it")
        version = ["--tls-max", "1.2"] if c.max_version == "1.2" else ["--tlsv1.3"]
        r = subprocess.run([curl, "-sS", "--max-time", "10", "--cacert", c.cafile, *version,
                            "-x", f"http://127.0.0.1:{proxy_port}", f"https://{c.host}:{c.port}/"],
                           capture_output=True, text=True, timeout=CASE_TIMEOUT, env=_no_proxy_env())
        out[c.id] = Result(r.returncode == 0 and r.stdout == "ok\n", r.stderr.strip())
    return out


def run_openssl(cases, proxy_port, tmpdir):
    openssl = _need("openssl")
    out = {}
    for c in cases:
        name = ["-noservername"] if c.sni is None else ["-servername", c.sni]
        version = ["-tls1_2"] if c.max_version == "1.2" else []
        request = f"GET / HTTP/1.1\r\nHost: {c.host}\r\nConnection: close\r\n\r\n"
        r = subprocess.run([openssl, "s_client", "-proxy", f"127.0.0.1:{proxy_port}",
                            "-connect", f"{c.host}:{c.port}", *name, *version, "-CAfile", c.cafile,
                            "-verify_return_error", "-verify_hostname", c.host, "-quiet", "-ign_eof"],
                           input=request, capture_output=True, text=True, timeout=CASE_TIMEOUT)
        out[c.id] = Result("HTTP/1.1 200" in r.stdout, r.stderr.strip()[-300:])
    return out


def run_python(cases, proxy_port, tmpdir):
    out = {}
    for c in cases:
        ctx = ssl.create_default_context(cafile=c.cafile)
        if c.max_version == "1.2":
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            sock = connect_tunnel(proxy_port, c.host, c.port)
            if c.sni is None:  # Python sends no SNI only without a server_hostname
                ctx.check_hostname = False
            with ctx.wrap_socket(sock, server_hostname=c.sni) as tls:
                tls.sendall(f"GET / HTTP/1.1\r\nHost: {c.host}\r\nConnection: close\r\n\r\n".encode())
                out[c.id] = Result(read_head(tls).startswith(b"HTTP/1.1 200"), "")
        except (OSError, ssl.SSLError) as e:
            out[c.id] = Result(False, str(e))
    return out


def run_gnutls(cases, proxy_port, tmpdir):
    gnutls = _need("gnutls-cli")
    out = {}
    for c in cases:
        with Forwarder(proxy_port, c.host, c.port) as fwd:
            name = ["--disable-sni"] if c.sni is None else [f"--sni-hostname={c.sni}"]
            version = ["--priority=NORMAL:-VERS-TLS1.3"] if c.max_version == "1.2" else []
            out[c.id] = _gnutls_case([gnutls, "-p", str(fwd.port), "127.0.0.1", *name, *version,
                                      f"--verify-hostname={c.host}", f"--x509cafile={c.cafile}"],
                                     c.host)
    return out


def _gnutls_case(argv: list[str], host: str) -> Result:
    """gnutls-cli sends stdin once connected and quits at its end: stdin stays open until
    the answer is in (or the client ends), else it may leave before the answer."""
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(CASE_TIMEOUT, p.kill)  # readline() below blocks: bound it
    watchdog.start()
    try:
        p.stdin.write(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
        p.stdin.flush()
        seen = ""
        while line := p.stdout.readline():
            seen += line
            if line.startswith("HTTP/1.1 200"):
                break
        p.stdin.close()
        out, err = p.stdout.read(), p.stderr.read()  # to the end: the watchdog bounds it
        p.wait(CASE_TIMEOUT)
    finally:
        watchdog.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
    seen += out
    return Result("HTTP/1.1 200" in seen, (err.strip() + " " + seen[-200:])[-400:])


def _no_proxy_env() -> dict:
    return {k: v for k, v in os.environ.items()
            if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}


class Forwarder:
    """127.0.0.1:port that opens a CONNECT tunnel through the proxy for each connection
    and relays both ways (half-close kept): proxy support for a client that has none."""

    def __init__(self, proxy_port: int, host: str, port: int) -> None:
        self._target = (proxy_port, host, port)
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(CASE_TIMEOUT)
        self.port = self._sock.getsockname()[1]
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Forwarder:
        t = threading.Thread(target=self._accept_one, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc) -> None:
        self._sock.close()
        for t in self._threads:
            t.join(CASE_TIMEOUT)

    def _accept_one(self) -> None:
        try:
            client, _ = self._sock.accept()
        except OSError:
            return
        with client, connect_tunnel(*self._target) as upstream:
            client.settimeout(CASE_TIMEOUT)
            upstream.settimeout(CASE_TIMEOUT)
            back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            back.start()
            _pipe(client, upstream)
            back.join(CASE_TIMEOUT)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


RUNNERS = {
    "curl": run_curl, "openssl": run_openssl, "python": run_python, "node": run_node,
    "go": run_go, "java": run_java, "erlang": run_erlang, "gnutls": run_gnutls,
}
