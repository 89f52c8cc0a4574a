"""The command line as a new user meets it: every failure is one sentence and an exit
code, options mean the same before or after the command, `python -m inspector` and
`--version` work. Real processes throughout."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import pytest

from .support import env_without_proxy

ROOT_CLI = [sys.executable, "-m", "inspector.cli"]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*ROOT_CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=env_without_proxy())


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


# (arguments, what the one line must say); {port} is a port something else listens on
BAD_INPUTS = [
    (["--headless", "--listen-port", "{port}"], "port {port} is in use: pick another with --listen-port"),
    (["--headless", "--listen-port", "abc"], "--listen-port takes a whole number, not 'abc'"),
    (["--headless", "--listen-port", "70000"], "--listen-port 70000 is not a port"),
    (["--headless", "--upstream-proxy", "http://127.0.0.1:notaport"],
     "--upstream-proxy takes http://HOST:PORT"),
    (["--headless", "--upstream-proxy", "socks5://127.0.0.1:1080"], "--upstream-proxy takes"),
    (["--headless", "--handshake-timeout", "nan"], "--handshake-timeout must be > 0 seconds"),
    (["--headless", "--handshake-timeout", "soon"], "--handshake-timeout takes a number"),
    (["--headless", "--duration", "nan"], "--duration must be > 0 seconds"),
    (["probe", "127.0.0.1:1", "--probe-timeout", "nan"], "--probe-timeout must be > 0 seconds"),
    (["probe", "127.0.0.1:99999"], "is not HOST[:PORT]"),
    (["probe"], "tunnel-inspector probe needs HOST[:PORT]"),
    (["--headless", "--fail-on", "sometimes"], "--fail-on takes never, warning or error"),
    (["--headless", "--jsonl"], "--jsonl needs a value"),
    (["--headless", "--expiring-days", "-1"], "--expiring-days must be >= 0"),
    (["--headless", "--trust", "/nonexistent.pem", "--listen-port", "0"], "does not exist"),
    (["--follow", "demo"], "--follow does not apply to the demo command: it is an option of open"),
    (["--jsonl", "x.jsonl", "probe", "example.test"], "--jsonl does not apply to the probe command"),
    (["dmeo"], "unknown command 'dmeo'"),
    (["open", "/nonexistent.jsonl"], "/nonexistent.jsonl"),
    (["report", "/nonexistent.jsonl"], "/nonexistent.jsonl"),
]


def test_every_bad_input_is_one_sentence_on_stderr_and_exit_2(busy_port):
    """No usage dump, no traceback, no internal name: one line saying what to change."""
    wrong = []
    for args, expected in BAD_INPUTS:
        argv = [a.format(port=busy_port) for a in args]
        r = _cli(*argv)
        lines = r.stderr.splitlines()
        line = lines[0] if lines else ""
        if (r.returncode != 2 or len(lines) != 1 or expected.format(port=busy_port) not in line
                or not line.startswith("tunnel-inspector") or "inspector_" in line):
            wrong.append(f"{argv}: exit {r.returncode}, stderr {r.stderr!r}")
        if "listening on" in r.stdout:
            wrong.append(f"{argv}: the proxy started: {r.stdout!r}")
    assert not wrong, "\n".join(wrong)


def test_an_unknown_option_prints_the_usage_then_one_sentence():
    r = _cli("demo", "--bogus")
    assert r.returncode == 2
    assert r.stderr.startswith("usage: tunnel-inspector demo")
    assert r.stderr.splitlines()[-1] == ("tunnel-inspector: unknown option --bogus "
                                         "(see tunnel-inspector demo --help)")


def test_sigint_during_a_probe_is_one_line_and_exit_130():
    with socket.socket() as silent:  # accepts the probe's TCP connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(20)
        port = silent.getsockname()[1]
        p = subprocess.Popen([*ROOT_CLI, "probe", f"127.0.0.1:{port}", "--probe-timeout", "30"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env_without_proxy())
        try:
            conn, _ = silent.accept()  # the probe is now waiting for the ServerHello
            with conn:
                p.send_signal(signal.SIGINT)
                out, err = p.communicate(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert p.returncode == 130, err
    assert err.splitlines() == ["tunnel-inspector: interrupted"]


def test_options_before_the_command_mean_the_same_as_after_and_no_openssl_needed(tmp_path):
    """`--headless` and `--jsonl` typed before `demo` are the demo's: headless (this
    process has no terminal: the UI would fail), and the records go to the file. The
    PATH holds no program at all: the lab (its SHA-1 intermediate included) is made
    with cryptography alone."""
    jsonl = tmp_path / "before.jsonl"
    empty = tmp_path / "no-programs"
    empty.mkdir()
    r = subprocess.run([*ROOT_CLI, "--headless", "--jsonl", str(jsonl), "demo",
                        "--listen-host", "127.0.0.1"], capture_output=True, text=True,
                       timeout=120, env={**env_without_proxy(), "PATH": str(empty)})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("listening on 127.0.0.1:")
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert records and r.stdout.strip().splitlines()[-1].startswith(f"{len(records)} tunnels")
    assert "weak-signature" in {f["code"] for rec in records for f in rec["findings"]}


def test_python_dash_m_inspector_and_version():
    from importlib.metadata import version

    r = subprocess.run([sys.executable, "-m", "inspector", "--version"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"tunnel-inspector {version('tunnel-inspector')}"
    r = subprocess.run([sys.executable, "-m", "inspector", "probe", "--help"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0 and "usage: tunnel-inspector probe" in r.stdout
