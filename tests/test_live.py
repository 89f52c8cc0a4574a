"""Live mode in a real terminal (tmux): the proxy is the process the user starts, the
UI a child process of it on the same terminal. A UI that dies cuts no tunnel and loses
no record; q stops both with the run's summary and exit code; a proxy that dies ends
the UI with one sentence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from .support import HOST, good_and_no_sni, require_tool, tls_through_proxy, wait_for

SCREEN_TIMEOUT = 30.0


class Terminal:
    """`tunnel-inspector ARGS` in a tmux session: its screen, its processes, its end."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.tmux = require_tool("tmux")
        self.session = f"ti-live-{uuid.uuid4().hex[:8]}"
        self.rc = tmp_path / "rc.txt"
        # the terminal is stdout and stderr both, as a user's (Textual sizes its screen
        # from stdout); the summary is read from the screen once the run ended
        cmd = (f"cd {tmp_path} && {sys.executable} -m inspector.cli {' '.join(args)}; "
               f"echo $? > {self.rc}; sleep 60")
        env = {**os.environ, "TERM": "xterm-256color",
               "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        subprocess.run([self.tmux, "new-session", "-d", "-s", self.session, "-x", "160", "-y", "45",
                        cmd], check=True, env=env, timeout=10)

    def screen(self) -> str:
        return subprocess.run([self.tmux, "capture-pane", "-t", self.session, "-p"],
                              capture_output=True, text=True, timeout=10).stdout

    def shows(self, *texts: str) -> str:
        screen = ""

        def shown() -> bool:
            nonlocal screen
            screen = self.screen()
            return all(t in screen for t in texts)

        try:
            wait_for(shown, SCREEN_TIMEOUT, f"{texts} on screen", interval=0.1)
        except AssertionError as e:
            raise AssertionError(f"{e}:\n{screen}") from None
        return screen

    def keys(self, *keys: str) -> None:
        subprocess.run([self.tmux, "send-keys", "-t", self.session, *keys], timeout=10)

    def proxy_pid(self) -> int:
        shell = subprocess.run([self.tmux, "list-panes", "-t", self.session, "-F", "#{pane_pid}"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return wait_for(lambda: _children(int(shell), "inspector.cli"), 10, "the proxy")[0]

    def ui_pid(self) -> int:
        return wait_for(lambda: _children(self.proxy_pid(), "inspector.run.ui"), 10, "the UI")[0]

    def exit_code(self) -> int:
        return int(wait_for(lambda: self.rc.exists() and self.rc.read_text().strip(),
                            SCREEN_TIMEOUT, "the run to end"))

    def close(self) -> None:
        subprocess.run([self.tmux, "kill-session", "-t", self.session], capture_output=True)


def _children(pid: int, marker: str) -> list[int]:
    """The child processes of `pid` whose command line contains `marker`."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    found = []
    for kid in map(int, kids):
        try:
            if marker in Path(f"/proc/{kid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(kid)
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:  # reaped, possibly between two looks
        return False


@pytest.fixture
def terminal(tmp_path):
    opened: list[Terminal] = []

    def start(*args: str) -> Terminal:
        t = Terminal(tmp_path, "--listen-port", "0", *args)
        opened.append(t)
        return t

    yield start
    for t in opened:
        t.close()


def _port(screen: str) -> int:
    line = next(x for x in screen.splitlines() if "listening on 127.0.0.1:" in x)
    return int(line.split("listening on 127.0.0.1:")[1].split()[0])


def test_a_ui_killed_mid_run_is_restarted_no_tunnel_cut_no_record_lost(
        tmp_path, terminal, echo_server, strict_server, pki):
    echo, strict = echo_server.port, strict_server.port
    jsonl = tmp_path / "t.jsonl"
    t = terminal("--trust", pki["root_pem"], "--jsonl", str(jsonl), "--fail-on", "error",
                 "--connect-to", f"{HOST}:{echo}:127.0.0.1:{echo}",
                 "--connect-to", f"{HOST}:{strict}:127.0.0.1:{strict}")
    port = _port(t.shows("listening on 127.0.0.1:"))
    with tls_through_proxy(port, HOST, echo, cafile=pki["root_pem"], sni=HOST) as long_lived:
        long_lived.sendall(b"before")
        assert long_lived.recv(100) == b"before"
        good_and_no_sni(port, strict, pki["root_pem"])
        t.shows(" 3 tunnels", "sni-missing", "tunnels open 1", "probes in flight 0")
        ui = t.ui_pid()
        os.kill(ui, signal.SIGKILL)  # the UI dies as a crash would
        t.shows("killed by SIGKILL", " 3 tunnels", "tunnels open 1", "probes in flight 0")
        assert t.ui_pid() != ui
        long_lived.sendall(b"after")  # the tunnel opened before the crash still relays
        assert long_lived.recv(100) == b"after"
        good_and_no_sni(port, strict, pki["root_pem"])
    screen = t.shows(" 5 tunnels", "sni-missing 2", "tunnels open 0")
    assert "\x1b" not in screen and "Traceback" not in screen
    t.keys("q")
    assert t.exit_code() == 1  # --fail-on error: the missing SNI, as headless would say
    records = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert len(records) == len({r["id"] for r in records}) == 5
    screen = t.screen()
    assert "tunnel-inspector: the UI ended unexpectedly (killed by SIGKILL) and was restarted" in screen
    assert "5 tunnels, 2 flagged (" in screen
    failing = f"  {HOST}:{strict}  server-alert, sni-missing, sni-required"
    assert f"failing (--fail-on error): 1 host\n{failing}" in screen
    assert not _alive(ui)


def test_a_proxy_that_dies_ends_the_ui_with_one_sentence(terminal):
    t = terminal()
    t.shows("listening on 127.0.0.1:")
    ui = t.ui_pid()
    os.kill(t.proxy_pid(), signal.SIGKILL)
    t.shows("tunnel-inspector: the proxy process ended unexpectedly: no new tunnels can be shown")
    wait_for(lambda: not _alive(ui), 10, "the UI to exit")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_to_the_proxy_stops_both_with_the_summary(terminal, sig):
    t = terminal()
    t.shows("listening on 127.0.0.1:")
    ui = t.ui_pid()
    os.kill(t.proxy_pid(), sig)
    assert t.exit_code() == 0
    screen = t.screen()
    assert "0 tunnels, 0 flagged" in screen and "Traceback" not in screen
    assert not _alive(ui)


def _nice(pid: int) -> set[int]:
    """The nice value of each thread of `pid` (a thread has its own)."""
    values = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            values.add(int((task / "stat").read_text().rsplit(")", 1)[1].split()[16]))
        except OSError:
            continue  # the thread ended meanwhile
    return values


def test_the_ui_yields_the_cpu_to_the_proxy(terminal):
    from inspector.run.ui import UI_NICE

    t = terminal()
    t.shows("listening on 127.0.0.1:", "no tunnels yet")  # the UI's feed thread runs
    proxy, ui = t.proxy_pid(), t.ui_pid()
    assert UI_NICE > 0
    assert _nice(proxy) == {0}
    assert _nice(ui) == {UI_NICE}  # every thread, the feed reader's too
