"""Helpers the tests import by name (conftest.py holds fixtures only): the lab host, the
real proxy as a subprocess, TLS clients through it, bounded waits, and the UI's screen
as text read from Textual's public SVG screenshot."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from rich.cells import cell_len

from inspector.lab.http1 import connect_tunnel

HOST = "a.lab.test"  # does not resolve: the proxy reaches it through --connect-to
TRACEBACK = "Traceback (most recent call last)"

__all__ = ["HOST", "TRACEBACK", "LiveProxy", "ProxyProcess", "RunningUI", "env_without_proxy",
           "live_proxy", "require_tool", "screen_text", "tls_through_proxy", "wait_for"]

T = TypeVar("T")


# --- waiting ------------------------------------------------------------------------------


def wait_for(condition: Callable[[], T], timeout: float = 10.0, what: str = "the condition",
             interval: float = 0.02) -> T:
    """Poll `condition` until it returns something true (returned), at most `timeout` s;
    then fail naming `what`. A test that must show something did NOT happen waits with
    this for a later event that proves the moment has passed, then asserts."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:  # never skip silently: a missing client is a broken test machine
        pytest.fail(f"{name} is not installed; .ci/run installs it")
    return path


# --- clients ------------------------------------------------------------------------------


def tls_through_proxy(proxy_port: int, host: str, port: int, *, cafile: str | None,
                      sni: str | None) -> ssl.SSLSocket:
    sock = connect_tunnel(proxy_port, host, port)
    ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    if sni is None:
        ctx.check_hostname = False
    return ctx.wrap_socket(sock, server_hostname=sni)


def good_and_no_sni(proxy_port: int, port: int, cafile: str) -> None:
    """Two tunnels to HOST at `port`: one with its SNI, one without (the server refuses
    it: an sni-missing record)."""
    with tls_through_proxy(proxy_port, HOST, port, cafile=cafile, sni=HOST):
        pass
    with pytest.raises(OSError):
        with tls_through_proxy(proxy_port, HOST, port, cafile=cafile, sni=None):
            pass


def env_without_proxy() -> dict:
    env = dict(os.environ)
    for k in list(env):
        if k.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            del env[k]
    return env


# --- the real proxy, as a subprocess ---------------------------------------------------------


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
        """Wait (bounded) until at least `count` records are written; return them (fewer
        on timeout: the caller's assertion says what was missing)."""
        lines: list[str] = []

        def enough() -> bool:
            nonlocal lines
            lines = self.jsonl.read_text().splitlines() if self.jsonl.exists() else []
            return len(lines) >= count

        try:
            wait_for(enough, timeout, f"{count} records")
        except AssertionError:
            pass
        return [json.loads(line) for line in lines]

    def tunnel_lines(self, count: int, timeout: float = 15.0) -> list[str]:
        """Wait (bounded) until the proxy has printed `count` tunnel lines; return them.
        Unlike records(), this sees tunnels whose record could not be written."""
        lines: list[str] = []

        def enough() -> bool:
            nonlocal lines
            lines = [x for x in list(self._out) if "  CONNECT " in x]
            return len(lines) >= count

        try:
            wait_for(enough, timeout, f"{count} tunnel lines")
        except AssertionError:
            pass
        return lines

    def stderr_so_far(self) -> str:
        return "".join(list(self._err))

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


# --- the live proxy's side of the UI, in the test's event loop -------------------------------


class LiveProxy:
    """The real addon, proxy and UiHost, as the live run composes them (run/live.py):
    `ui()` gives an app whose ProxyFeed is connected to it, as a UI process's is."""

    def __init__(self, host, port: int) -> None:
        self.host = host  # inspector.run.uihost.UiHost
        self.port = port

    async def ui(self, export_dir: Path, log_path: Path | None = None):
        import socket

        from inspector.tui import InspectorApp, ProxyFeed

        ours, theirs = socket.socketpair()
        self.link = await self.host.connect(ours)
        return InspectorApp(ProxyFeed(theirs), export_dir=export_dir, log_path=log_path)


@contextlib.asynccontextmanager
async def live_proxy(options: dict) -> AsyncIterator[LiveProxy]:
    """The proxy listening on 127.0.0.1 with these mitmproxy options, its records spooled
    and its figures published for UIs, until the block ends."""
    from inspector.mitm.addon import TunnelInspector
    from inspector.mitm.embed import Proxy
    from inspector.records.record import host_port
    from inspector.run.uihost import UiHost

    addon = TunnelInspector()
    host = UiHost()
    host.attach(addon.stream, addon.stats)
    proxy = Proxy([addon], {"listen_host": "127.0.0.1", "listen_port": 0, **options})
    try:
        address, port = await proxy.start()
        host.source = f"listening on {host_port(address, port)}"
        stats = asyncio.ensure_future(host.publish_stats())
        try:
            yield LiveProxy(host, port)
        finally:
            stats.cancel()
            await proxy.stop()
    finally:
        host.close()


# --- the UI ----------------------------------------------------------------------------------

# Rich's SVG export (what App.export_screenshot returns, and what snapshot tests
# compare): each run of text is a <text> at x = column * char width, clipped to its line.
_SVG_CHAR_WIDTH = 20 * 0.61  # rich.console.Console.export_svg: char_height 20, aspect 0.61
_SVG_TEXT = re.compile(r'<text class="[^"]*" x="([0-9.e+]+)" y="[^"]*" textLength="[^"]*" '
                       r'clip-path="url\(#[^)]*-line-(\d+)\)">(.*?)</text>', re.S)


def screen_text(app) -> str:
    """What the terminal shows, one string per screen line, from the public SVG screenshot."""
    width, height = app.size
    lines: list[list[str]] = [[] for _ in range(height)]
    cells = [0] * height
    for x, line_no, content in _SVG_TEXT.findall(app.export_screenshot()):
        y, column = int(line_no), round(float(x) / _SVG_CHAR_WIDTH)
        text = html.unescape(content).replace("\xa0", " ").replace("\n", "")  # line ends
        if not text:
            continue
        lines[y].append(" " * max(0, column - cells[y]) + text)
        cells[y] = column + cell_len(text)
    return "\n".join("".join(parts) for parts in lines)


class RunningUI:
    """An app running headless under `run_test` (see the running_app fixture): the
    pilot, the notifications it posted (Textual's public Notify messages), its screen."""

    def __init__(self, app, pilot, notifications: list) -> None:
        self.app = app
        self.pilot = pilot
        self.notifications = notifications  # textual.notifications.Notification, oldest first

    @property
    def notices(self) -> list[str]:
        return [str(n.message) for n in self.notifications]

    def text(self) -> str:
        return screen_text(self.app)

    def lines(self) -> list[str]:
        return self.text().splitlines()

    async def press(self, *keys: str) -> None:
        await self.pilot.press(*keys)

    async def wait_for(self, condition: Callable[[], T], timeout: float = 10.0,
                       what: str = "the condition") -> T:
        """wait_for() inside the app's event loop: the app runs while this polls."""
        deadline = time.monotonic() + timeout
        while True:
            await self.pilot.pause()  # every pending message handled, the screen current
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
            await asyncio.sleep(0.02)

    async def shows(self, *texts: str, timeout: float = 10.0) -> str:
        """Wait until every one of `texts` is on screen; the screen's text."""
        screen = ""

        def on_screen() -> bool:
            nonlocal screen
            screen = self.text()
            return all(t in screen for t in texts)

        try:
            await self.wait_for(on_screen, timeout, f"{texts} on screen")
        except AssertionError as e:
            raise AssertionError(f"{e}; the screen:\n{screen}") from None
        return screen
