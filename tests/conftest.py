"""Shared fixtures: a lab PKI, lab TLS servers, and the real proxy as a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from inspector.lab.http1 import connect_tunnel
from inspector.lab.pki import make_cert
from inspector.lab.server import TLSServer

HOST = "a.lab.test"  # does not resolve: the proxy reaches it through --connect-to

__all__ = ["HOST", "ProxyProcess", "connect_tunnel", "env_without_proxy", "require_tool",
           "tls_through_proxy"]


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # never skip silently: a missing client is a broken test machine
        pytest.fail(f"{name} is not installed; .ci/run installs it")
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    root = make_cert("Lab Root CA", ca=True)
    leaf = make_cert(HOST, root, sans=(HOST,))
    (d / "root.pem").write_bytes(root.pem)
    return {"root": root, "leaf": leaf, "root_pem": str(d / "root.pem"),
            "leaf_sha256": hashlib.sha256(leaf.der).hexdigest()}


@pytest.fixture(scope="session")
def strict_server(pki):
    """Serves HOST only; refuses a missing or unknown SNI with unrecognized_name."""
    with TLSServer([pki["leaf"].cert], pki["leaf"].key, sni_names=[HOST]) as s:
        yield s


@pytest.fixture(scope="session")
def echo_server(pki):
    with TLSServer([pki["leaf"].cert], pki["leaf"].key, mode="echo") as s:
        yield s


class ProxyProcess:
    def __init__(self, args: list[str], jsonl: Path) -> None:
        self.jsonl = jsonl
        self.proc = self._popen([sys.executable, "-m", "inspector.cli", "--headless",
                                 "--listen-port", "0", "--jsonl", str(jsonl), *args])
        self.first_line = first = self.proc.stdout.readline()
        if not first.startswith("listening on "):
            self.proc.kill()
            raise AssertionError(f"proxy did not start: {first!r} {self.proc.stderr.read()!r}")
        self.port = int(first.rsplit(":", 1)[1])
        self.url = f"127.0.0.1:{self.port}"
        # Both pipes are drained as the proxy writes: a test can wait for a headless
        # line, and a proxy that logs a lot never blocks on a full pipe.
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [threading.Thread(target=_drain, args=(pipe, into), daemon=True)
                         for pipe, into in ((self.proc.stdout, self._out),
                                            (self.proc.stderr, self._err))]
        for t in self._readers:
            t.start()
        self._result: tuple[int, str, str] | None = None

    def _popen(self, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def records(self, count: int, timeout: float = 15.0) -> list[dict]:
        """Wait (bounded) until at least `count` records are written; return them."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.jsonl.read_text().splitlines() if self.jsonl.exists() else []
            if len(lines) >= count or time.monotonic() > deadline:
                return [json.loads(line) for line in lines]
            time.sleep(0.05)

    def tunnel_lines(self, count: int, timeout: float = 15.0) -> list[str]:
        """Wait (bounded) until the proxy has printed `count` tunnel lines; return them.
        Unlike records(), this sees tunnels whose record could not be written."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [x for x in list(self._out) if "  CONNECT " in x]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        """Send `sig` (SIGTERM) and wait; returns (exit code, stdout after the first
        line, stderr). Stopping again returns the same."""
        if self._result is None:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            for t in self._readers:
                t.join(5)
            self._result = self.proc.returncode, "".join(self._out), "".join(self._err)
        return self._result


def _drain(pipe, into: list[str]) -> None:
    for line in pipe:
        into.append(line)
    pipe.close()


@pytest.fixture
def start_proxy(tmp_path, pki):
    """start(*args, jsonl=PATH) runs the real proxy; teardown stops it, and fails the
    test if the proxy wrote a traceback: a traceback is a bug even when records look fine."""
    started: list[ProxyProcess] = []

    def start(*args: str, jsonl: Path | None = None) -> ProxyProcess:
        # The lab root is what the tests' clients trust, unless a test says otherwise.
        trust = [] if "--trust" in args else ["--trust", pki["root_pem"]]
        p = ProxyProcess([*trust, *args], jsonl or tmp_path / f"tunnels{len(started)}.jsonl")
        started.append(p)
        return p

    yield start
    tracebacks = []
    for p in started:
        _, _, err = p.stop()
        if "Traceback" in err:
            tracebacks.append(f"proxy {' '.join(p.proc.args[2:])}\n{err}")
    if tracebacks:
        pytest.fail("the proxy wrote a traceback to stderr:\n" + "\n".join(tracebacks),
                    pytrace=False)


def tls_through_proxy(proxy_port: int, host: str, port: int, *, cafile: str | None,
                      sni: str | None) -> ssl.SSLSocket:
    sock = connect_tunnel(proxy_port, host, port)
    ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    if sni is None:
        ctx.check_hostname = False
    return ctx.wrap_socket(sock, server_hostname=sni)


def env_without_proxy() -> dict:
    env = dict(os.environ)
    for k in list(env):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del env[k]
    return env
