"""The command line, and the composition root: it wires addon, proxy and sinks."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from inspector.mitm.limits import HEAD_TIMEOUT_S
from inspector.mitm.embed import Proxy, ProxyStartError
from inspector.records.record import host_port
from inspector.records.export import ExportTargetError
from inspector.run.report import EXIT_NOT_WRITTEN, EXIT_USAGE, RunReport
from inspector.records.stream import LinePrinter

class CliError(Exception):
    """A sentence for stderr, and exit 2."""


def _chain_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("chain verdicts")
    g.add_argument("--trust", metavar="PATH|mozilla|system", action="append",
                   help="what a normal client trusts (repeatable; default mozilla)")
    g.add_argument("--client", metavar="NAME=PATH", action="append", default=[],
                   help="judge the chain for a client with its own root store, e.g. an old "
                        "device (repeatable)")
    g.add_argument("--probe-timeout", type=float, default=5.0, metavar="S",
                   help="seconds a probe handshake may take (default 5)")
    g.add_argument("--expiring-days", type=int, default=30, metavar="N",
                   help="warn when a certificate expires within N days (default 30)")
    g.add_argument("--upstream-proxy", metavar="URL",
                   help="send tunnels and probes through this HTTP proxy (http://HOST:PORT)")
    g.add_argument("--connect-to", metavar="HOST:PORT:HOST2:PORT2", action="append", default=[],
                   help="send tunnels for HOST:PORT to HOST2:PORT2, SNI untouched (repeatable)")


def _proxy_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("proxy")
    g.add_argument("--listen-host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1)")
    g.add_argument("--listen-port", type=int, default=8080,
                   help="port to listen on; 0 picks a free one (default 8080)")
    g.add_argument("--proxy-auth", metavar="USER:PASS",
                   help="require these proxy credentials (needed with a non-loopback --listen-host)")
    g.add_argument("--allow-remote", action="store_true",
                   help="accept a non-loopback --listen-host without --proxy-auth")
    g.add_argument("--jsonl", metavar="PATH",
                   help="append one JSON record per tunnel to PATH, each a whole line")
    g.add_argument("--export-flagged", metavar="PATH",
                   help="at exit, write the flagged tunnels to PATH as one JSON document "
                        "(not a symbolic link; they wait in a hidden file beside it)")
    g.add_argument("--export-dir", metavar="DIR", default=".",
                   help="where the UI's `e` key writes exports (default: the working directory)")
    g.add_argument("--fail-on", choices=("never", "warning", "error"), default="never",
                   help="exit 1 if any tunnel had a finding of this severity or worse")
    g.add_argument("--handshake-timeout", type=float, default=10.0, metavar="S",
                   help="record a handshake as timed out after S seconds (default 10)")
    g.add_argument("--connect-head-timeout", type=float, default=HEAD_TIMEOUT_S, metavar="S",
                   help="close a connection that has not sent its request head (CONNECT line "
                        "and headers) within S seconds; counted, not recorded (default 30)")
    g.add_argument("--no-probe", action="store_true",
                   help="never probe upstreams: chains only where the relay sees them (TLS <= 1.2)")
    g.add_argument("--no-fast-relay", action="store_true",
                   help="relay every byte through mitmproxy's layers, even after the handshake "
                        "is decided (slower; for comparison)")
    g.add_argument("--intercept", action="store_true",
                   help="terminate TLS with mitmproxy's CA (the client must trust it); the "
                        "upstream gets exactly the client's SNI")
    g.add_argument("--confdir", metavar="DIR", default="~/.mitmproxy",
                   help="--intercept only: where mitmproxy keeps its CA (made private, 0700)")
    g.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    _chain_options(p)


EXIT_STATUS = (
    "exit status: 0 done; 1 --fail-on found a tunnel at that severity; 2 a bad option, "
    "a port in use, or a --jsonl / --export-flagged that cannot be written (checked before "
    f"the proxy listens); {EXIT_NOT_WRITTEN} records could not be written during the run "
    "(a full disk): the summary line says how many were NOT written to --jsonl, and stderr "
    "whether the --export-flagged file is missing or incomplete."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunnel-inspector",
        description="A forward proxy that shows, for every CONNECT tunnel, the CONNECT "
        "target next to the client's SNI, how the TLS handshake ended, and a verdict on "
        "the upstream certificate chain. Without a command: the proxy and its live UI.",
        epilog=EXIT_STATUS,
    )
    parser.add_argument("--headless", action="store_true",
                        help="no UI: print one line per tunnel on stdout")
    _proxy_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="{demo,probe,open}")

    demo = sub.add_parser("demo", help="the built-in lab, scripted clients and the proxy",
                          description="Start lab TLS servers on 127.0.0.1, the proxy trusting "
                          "the lab root, and clients that reproduce each kind of breakage.",
                          epilog=EXIT_STATUS)
    demo.add_argument("--headless", action="store_true",
                      help="print the records' lines and exit when the clients are done")
    _proxy_options(demo)
    demo.set_defaults(listen_port=0)  # any free port: the demo must not collide with a real run

    pr = sub.add_parser("probe", help="one chain verdict for HOST[:PORT], no proxy",
                        description="Handshake with HOST[:PORT] and print its chain and findings. "
                        "Exit 0 clean, 1 flagged, 2 could not probe.")
    pr.add_argument("target", metavar="HOST[:PORT]")
    names = pr.add_mutually_exclusive_group()
    names.add_argument("--sni", metavar="NAME", help="send this SNI (default: HOST if a name)")
    names.add_argument("--no-sni", action="store_true", help="send no SNI")
    pr.add_argument("--json", action="store_true", help="print the record as JSON")
    _chain_options(pr)

    op = sub.add_parser("open", help="a recorded JSON Lines stream in the UI")
    op.add_argument("file", metavar="FILE.jsonl")
    op.add_argument("--follow", action="store_true", help="keep reading as the file grows")
    op.add_argument("--export-dir", metavar="DIR", default=".",
                    help="where the `e` key writes exports (default: the working directory)")
    return parser


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    for name in ("duration", "handshake_timeout", "connect_head_timeout", "probe_timeout"):
        value = getattr(args, name, None)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0 seconds")
    if hasattr(args, "expiring_days") and args.expiring_days < 0:
        parser.error("--expiring-days must be >= 0")
    if getattr(args, "upstream_proxy", None) and not args.upstream_proxy.startswith("http://"):
        parser.error("--upstream-proxy takes http://HOST:PORT")
    if not hasattr(args, "listen_host"):
        return
    if not 0 <= args.listen_port <= 65535:
        parser.error(f"--listen-port {args.listen_port} is not a port (0-65535)")
    if args.proxy_auth is not None and ":" not in args.proxy_auth:
        parser.error("--proxy-auth takes USER:PASS")
    if not _is_loopback(args.listen_host):
        if not (args.proxy_auth or args.allow_remote):
            parser.error(
                f"--listen-host {args.listen_host} accepts connections from other machines "
                "and would relay them anywhere: add --proxy-auth USER:PASS, or --allow-remote "
                "if that is what you want"
            )
        print(f"tunnel-inspector: warning: listening on {args.listen_host}: reachable from "
              "other machines" + ("" if args.proxy_auth else ", with no authentication"),
              file=sys.stderr)


def private_dir(path: str) -> str:
    """Create (or tighten) a directory only its owner can read: it holds a CA key."""
    path = os.path.expanduser(path)
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as e:
        raise CliError(f"cannot make {path} private: {e.strerror}") from None
    return path


def mitm_options(args: argparse.Namespace) -> dict:
    opts = {
        "listen_host": args.listen_host,
        "listen_port": args.listen_port,
        "inspector_jsonl": args.jsonl,
        "inspector_connect_to": args.connect_to,
        "inspector_handshake_timeout": args.handshake_timeout,
        "inspector_connect_head_timeout": args.connect_head_timeout,
        "inspector_trust": args.trust or ["mozilla"],
        "inspector_client": args.client,
        "inspector_probe": not args.no_probe,
        "inspector_probe_timeout": args.probe_timeout,
        "inspector_expiring_days": args.expiring_days,
        "inspector_intercept": args.intercept,
        "inspector_fast_relay": not args.no_fast_relay,
    }
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
                raise CliError(str(e)) from None
            print(f"listening on {host_port(host, port)}", flush=True)
            job = asyncio.ensure_future(until(port)) if until else None
            await stop.wait(args.duration, job)
            if job is not None and not job.done():
                job.cancel()
            await proxy.stop()
        lines.close()
        return report.finish(addon.jsonl, addon.unrecorded)


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tunnel-inspector: %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "probe":
        from inspector.run.probe import run_probe

        return asyncio.run(run_probe(args))
    if args.command == "demo":
        from inspector.run.demo import run_demo

        return run_demo(args)
    if args.command == "open":
        from inspector.run.live import run_open

        return run_open(args)
    if args.headless:
        return asyncio.run(run_headless(args))
    from inspector.run.live import run_live

    return run_live(args, mitm_options(args))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _validate(args, parser)
    if args.command == "probe" or args.headless:
        _setup_logging()  # the UI routes logs to its own panel instead
    try:
        return _dispatch(args)
    except (CliError, ExportTargetError) as e:
        print(f"tunnel-inspector: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
