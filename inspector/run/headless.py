"""The proxy without a UI: one line per tunnel on stdout, the records to --jsonl.

Also what every run that starts the proxy shares (the live UI's too): its mitmproxy
options from the command line, `run_proxy` (start, serve a front, stop, summary and
exit code), and stopping on SIGINT/SIGTERM without losing a record.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from inspector.mitm.embed import Proxy, ProxyStartError
from inspector.options import mitm_values
from inspector.records.record import host_port
from inspector.records.stream import LinePrinter
from inspector.run.report import RunError, RunReport

if TYPE_CHECKING:
    from inspector.mitm.addon import TunnelInspector


def private_dir(path: str) -> str:
    """Create (or tighten) a directory only its owner can read: it holds a CA key."""
    path = os.path.expanduser(path)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as e:
        raise RunError(f"cannot make {path} private: {e.strerror}") from None
    return path


def mitm_options(args: argparse.Namespace) -> dict:
    """mitmproxy's options (ours and its own) for a run from these arguments."""
    opts = {"listen_host": args.listen_host, "listen_port": args.listen_port, **mitm_values(args)}
    if args.proxy_auth:
        opts["proxyauth"] = args.proxy_auth
    if args.upstream_proxy:
        opts["mode"] = [f"upstream:{args.upstream_proxy}"]
    if args.intercept:
        opts["confdir"] = private_dir(args.confdir)
    return opts


class _StopSignals:
    """SIGINT/SIGTERM set an event instead of killing the process mid-write.

    Installed before the listener is announced, so a signal sent right after the
    "listening on" line still ends in an orderly shutdown.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __enter__(self) -> _StopSignals:
        loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            loop.add_signal_handler(sig, self.event.set)
        return self

    def __exit__(self, *exc) -> None:
        loop = asyncio.get_running_loop()
        for sig in self.SIGNALS:
            loop.remove_signal_handler(sig)

    async def wait(self, duration: float | None, until: asyncio.Future | None = None) -> None:
        waits = [asyncio.ensure_future(self.event.wait())] + ([until] if until else [])
        await asyncio.wait(waits, timeout=duration, return_when=asyncio.FIRST_COMPLETED)
        waits[0].cancel()


class Front(Protocol):
    """What a run shows while the proxy listens: headless lines, or the live UI."""

    def attach(self, addon: TunnelInspector) -> None:
        """Before the proxy listens: subscribe to its records, so none is missed."""

    async def serve(self, host: str, port: int, stop: _StopSignals) -> None:
        """From the moment the proxy listens until the run ends (the proxy still runs)."""

    def close(self) -> None:
        """After the proxy stopped, before the summary is printed."""


async def run_proxy(args: argparse.Namespace, front: Front, options: dict | None = None) -> int:
    """The proxy, headless or live: the same addon, records, summary and exit code.

    options: extra mitmproxy options (the demo's lab trust). A start error (a port in
    use) is a RunError, one sentence, before anything is shown.
    """
    from inspector.mitm.addon import TunnelInspector

    addon = TunnelInspector()
    with RunReport(args.export_flagged, args.fail_on) as report:
        addon.stream.subscribe(report)
        front.attach(addon)
        try:
            proxy = Proxy([addon], {**mitm_options(args), **(options or {})}, intercept=args.intercept)
            with _StopSignals() as stop:
                try:
                    host, port = await proxy.start()
                except ProxyStartError as e:
                    raise RunError(str(e)) from None
                try:
                    await front.serve(host, port, stop)
                finally:
                    await proxy.stop()
        finally:
            front.close()
        return report.finish(addon.jsonl, addon.unrecorded)


class Headless:
    """One line per tunnel on stdout. until(port): the demo's scripted clients, whose
    end also ends the run."""

    def __init__(self, duration: float | None,
                 until: Callable[[int], Awaitable[object]] | None = None) -> None:
        self._duration = duration
        self._until = until
        self._lines = LinePrinter(colour=sys.stdout.isatty())

    def attach(self, addon: TunnelInspector) -> None:
        addon.stream.subscribe(self._lines)

    async def serve(self, host: str, port: int, stop: _StopSignals) -> None:
        print(f"listening on {host_port(host, port)}", flush=True)
        job = asyncio.ensure_future(self._until(port)) if self._until else None
        await stop.wait(self._duration, job)
        if job is not None and not job.done():
            job.cancel()

    def close(self) -> None:
        self._lines.close()


async def run_headless(
    args: argparse.Namespace,
    options: dict | None = None,
    until: Callable[[int], Awaitable[object]] | None = None,
) -> int:
    """The proxy with one line per tunnel on stdout (see Headless and run_proxy)."""
    return await run_proxy(args, Headless(args.duration, until), options)
