"""Entry points the CLI calls for the UI: `open FILE...`, and the proxy with its live UI.

Both return the process exit code. In live mode this process is the proxy (the
headless path, `run_proxy`: same records, summary and exit code) and the UI runs in a
child process on the same terminal (see uihost.py), so drawing never slows the proxy.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from inspector.records.record import host_port
from inspector.records.stream import LinePrinter
from inspector.run.report import EXIT_USAGE, RunError, record_files
from inspector.run.ui import run_app
from inspector.run.uihost import UiHost, UiSupervisor
from inspector.tui.app import InspectorApp
from inspector.tui.feeds import FileFeed

if TYPE_CHECKING:
    from inspector.mitm.addon import TunnelInspector
    from inspector.run.headless import _StopSignals


def run_open(args: argparse.Namespace) -> int:
    """`tunnel-inspector open FILE|DIR... [--follow] [--export-dir DIR]`."""
    try:
        paths = record_files(args.files)
    except RunError as e:
        print(f"tunnel-inspector: {e}", file=sys.stderr)
        return EXIT_USAGE
    feed = FileFeed(*paths, follow=args.follow)
    return run_app(InspectorApp(feed, export_dir=Path(args.export_dir)))


class Live:
    """The front of a live run: the UI process, started once the proxy listens and
    again if it ends abnormally; the run ends when the UI quits (q), on SIGINT/SIGTERM,
    or after --duration. until(port): the demo's scripted clients (their end does not
    end the run)."""

    def __init__(self, args: argparse.Namespace,
                 until: Callable[[int], Awaitable[object]] | None = None, note: str = "") -> None:
        self._host = UiHost()
        self._ui = UiSupervisor(self._host, args.export_dir)
        self._duration = args.duration
        self._until = until
        self._note = note
        self._addon: TunnelInspector | None = None
        self._lines: LinePrinter | None = None
        self._stderr_log: logging.Handler | None = None

    def attach(self, addon: TunnelInspector) -> None:
        self._addon = addon
        self._host.attach(addon.stream, addon.stats)
        logging.getLogger().addHandler(self._host.log_handler)
        logging.getLogger("inspector").setLevel(logging.INFO)

    async def serve(self, host: str, port: int, stop: _StopSignals) -> None:
        self._host.source = f"listening on {host_port(host, port)}{self._note}"
        started = time.monotonic()
        jobs: list[asyncio.Future] = [asyncio.ensure_future(self._host.publish_stats())]
        if self._until is not None:
            jobs.append(asyncio.ensure_future(self._until(port)))
        ui = asyncio.ensure_future(self._ui.run())
        hangup = _on_hangup(stop.event.set)
        try:
            await stop.wait(self._duration, ui)
            if ui.done() and not ui.result():  # the UI keeps failing: tunnels must not
                self._headless()
                left = (None if self._duration is None
                        else max(0.0, self._duration - (time.monotonic() - started)))
                await stop.wait(left)
        finally:
            await self._ui.stop()
            await ui  # returns once its UI process has ended
            for job in jobs:
                job.cancel()
            if hangup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    def _headless(self) -> None:
        """From now on, as --headless: lines on stdout, warnings on stderr."""
        assert self._addon is not None
        self._lines = LinePrinter(colour=sys.stdout.isatty())
        self._addon.stream.subscribe(self._lines)
        root = logging.getLogger()
        root.removeHandler(self._host.log_handler)
        self._stderr_log = logging.StreamHandler(sys.stderr)
        self._stderr_log.setLevel(logging.WARNING)
        root.addHandler(self._stderr_log)

    def close(self) -> None:
        if self._lines is not None:
            self._lines.close()
        root = logging.getLogger()
        root.removeHandler(self._host.log_handler)
        if self._stderr_log is not None:
            root.removeHandler(self._stderr_log)
        self._host.close()


def _on_hangup(callback: Callable[[], None]) -> bool:
    """The terminal closed (SIGHUP): stop in order, as on SIGTERM (the spool is removed,
    --jsonl and --export-flagged complete), unless SIGHUP is ignored (nohup)."""
    if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
        return False
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, callback)
    return True


def run_live(args: argparse.Namespace, options: dict | None = None,
             until: Callable[[int], Awaitable[object]] | None = None, note: str = "") -> int:
    """The proxy with the live UI; --export-flagged and --fail-on apply at exit as in
    headless mode. options: extra mitmproxy options (the demo's lab)."""
    from inspector.run.headless import run_proxy

    return asyncio.run(run_proxy(args, Live(args, until, note), options))
