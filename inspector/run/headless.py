"""The proxy without a UI: one line per tunnel on stdout, the records to --jsonl.

Also the pieces every run that starts the proxy shares: its mitmproxy options from
the command line, and stopping on SIGINT/SIGTERM without losing a record.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from inspector.mitm.embed import Proxy, ProxyStartError
from inspector.options import mitm_values
from inspector.records.record import host_port
from inspector.records.stream import LinePrinter
from inspector.run.report import RunError, RunReport


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


async def run_headless(
    args: argparse.Namespace,
    options: dict | None = None,
    until: Callable[[int], Awaitable[object]] | None = None,
) -> int:
    """The proxy with one line per tunnel on stdout.

    options: extra mitmproxy options (the demo's lab trust); until: called with the
    listening port once up, its end also ends the run (the demo's scripted clients).
    """
    from inspector.mitm.addon import TunnelInspector

    addon = TunnelInspector()
    with RunReport(args.export_flagged, args.fail_on) as report:
        lines = LinePrinter(colour=sys.stdout.isatty())
        addon.stream.subscribe(report)
        addon.stream.subscribe(lines)
        proxy = Proxy([addon], {**mitm_options(args), **(options or {})}, intercept=args.intercept)
        with _StopSignals() as stop:
            try:
                host, port = await proxy.start()
            except ProxyStartError as e:
                raise RunError(str(e)) from None
            print(f"listening on {host_port(host, port)}", flush=True)
            job = asyncio.ensure_future(until(port)) if until else None
            await stop.wait(args.duration, job)
            if job is not None and not job.done():
                job.cancel()
            await proxy.stop()
        lines.close()
        return report.finish(addon.jsonl, addon.unrecorded)
