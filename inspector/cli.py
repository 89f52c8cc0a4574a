"""The command line: argparse and dispatch to a composition root in inspector/run/.

Imports nothing heavy at module level: `open`, `probe` and `--help` never load
mitmproxy (each command imports its own root when it runs).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys

from inspector.options import OPTIONS, Option, seconds_problem
from inspector.records.export import ExportTargetError
from inspector.run.report import EXIT_NOT_WRITTEN, EXIT_USAGE, RunError

# Which of the table's options go in which help group (inspector/options.py).
_CHAIN = ("trust", "client", "probe_timeout", "expiring_days", "connect_to")


def _table_option(g, o: Option) -> None:
    """One argument from the option table: the same name, default, help and check as
    the addon's mitmproxy option."""
    if o.type is bool:
        g.add_argument(o.flag, dest=o.name, action="store_false" if o.default else "store_true",
                       help=o.help)
    elif o.repeatable:  # None until given: the table's default then applies
        g.add_argument(o.flag, dest=o.name, action="append", metavar=o.metavar, help=o.help)
    else:
        kind = o.type if o.type in (int, float) else str
        g.add_argument(o.flag, dest=o.name, type=kind, default=o.default, metavar=o.metavar,
                       help=o.help)


def _chain_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("chain verdicts")
    for o in OPTIONS:
        if o.name in _CHAIN:
            _table_option(g, o)
    g.add_argument("--upstream-proxy", metavar="URL",
                   help="send tunnels and probes through this HTTP proxy (http://HOST:PORT)")


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
    g.add_argument("--export-flagged", metavar="PATH",
                   help="at exit, write the flagged tunnels to PATH as one JSON document "
                        "(not a symbolic link; they wait in a hidden file beside it)")
    g.add_argument("--export-dir", metavar="DIR", default=".",
                   help="where the UI's `e` key writes exports (default: the working directory)")
    g.add_argument("--fail-on", choices=("never", "warning", "error"), default="never",
                   help="exit 1 if any tunnel had a finding of this severity or worse")
    for o in OPTIONS:
        if o.cli and o.name not in _CHAIN:
            _table_option(g, o)
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
    for o in OPTIONS:
        value = getattr(args, o.name, None)
        if o.cli and value is not None and (why := o.problem(value)) is not None:
            parser.error(f"{o.flag} {why}")
    if getattr(args, "duration", None) is not None and (why := seconds_problem(args.duration)):
        parser.error(f"--duration {why}")
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
        from inspector.run.headless import run_headless

        return asyncio.run(run_headless(args))
    from inspector.run.headless import mitm_options
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
    except (RunError, ExportTargetError) as e:
        print(f"tunnel-inspector: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
