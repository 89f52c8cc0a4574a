"""The command line, and the composition root: it wires addon, proxy and sinks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .proxy import Proxy, ProxyStartError
from .stream import Summary, format_line

EXIT_OK, EXIT_FLAGGED, EXIT_USAGE = 0, 1, 2


def _shared_options() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("proxy")
    g.add_argument("--listen-host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; other addresses expose an open relay)")
    g.add_argument("--listen-port", type=int, default=8080,
                   help="port to listen on; 0 picks a free one (default 8080)")
    g.add_argument("--jsonl", metavar="PATH", help="append one JSON record per tunnel to PATH")
    g.add_argument("--connect-to", metavar="HOST:PORT:HOST2:PORT2", action="append", default=[],
                   help="send tunnels for HOST:PORT to HOST2:PORT2, SNI untouched (repeatable)")
    g.add_argument("--handshake-timeout", type=float, default=10.0, metavar="S",
                   help="record a handshake as timed out after S seconds (default 10)")
    g.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    return p


def build_parser() -> argparse.ArgumentParser:
    shared = _shared_options()
    parser = argparse.ArgumentParser(
        prog="tunnel-inspector",
        parents=[shared],
        description="A forward proxy that shows, for every CONNECT tunnel, the CONNECT "
        "target next to the client's SNI and how the TLS handshake ended.",
    )
    parser.add_argument("--headless", action="store_true",
                        help="no UI: print one line per tunnel on stdout")
    return parser


def _mitm_options(args: argparse.Namespace) -> dict:
    return {
        "listen_host": args.listen_host,
        "listen_port": args.listen_port,
        "inspector_jsonl": args.jsonl,
        "inspector_connect_to": args.connect_to,
        "inspector_handshake_timeout": args.handshake_timeout,
    }


def _validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if not 0 <= args.listen_port <= 65535:
        parser.error(f"--listen-port {args.listen_port} is not a port (0-65535)")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be > 0 seconds")
    if args.handshake_timeout <= 0:
        parser.error("--handshake-timeout must be > 0 seconds")


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

    async def wait(self, duration: float | None) -> None:
        try:
            await asyncio.wait_for(self.event.wait(), duration)
        except asyncio.TimeoutError:
            pass


async def run_headless(args: argparse.Namespace) -> int:
    from addons.tunnel_inspector import TunnelInspector

    addon = TunnelInspector()
    summary = Summary()
    colour = sys.stdout.isatty()
    addon.stream.subscribe(summary)
    addon.stream.subscribe(lambda r: print(format_line(r, colour), flush=True))
    proxy = Proxy([addon], _mitm_options(args))
    with _StopSignals() as stop:
        try:
            host, port = await proxy.start()
        except ProxyStartError as e:
            print(f"tunnel-inspector: {e}", file=sys.stderr)
            return EXIT_USAGE
        print(f"listening on {host}:{port}", flush=True)
        await stop.wait(args.duration)
        await proxy.stop()
    print(summary.line(), flush=True)
    return EXIT_OK


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tunnel-inspector: %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _validate(args, parser)
    _setup_logging()
    if not args.headless:
        parser.error("the live UI is not built yet: use --headless")
    return asyncio.run(run_headless(args))


if __name__ == "__main__":
    sys.exit(main())
