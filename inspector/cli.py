"""The command line: argparse and dispatch to a composition root in inspector/run/.

Each command has its own parser, and the command may stand anywhere among the options:
`tunnel-inspector --jsonl x demo` is `tunnel-inspector demo --jsonl x`. A bad value is
one sentence on stderr and exit 2; usage is printed only for an unknown option, and an
option of another command is named as such.

Imports nothing heavy at module level: `open`, `probe`, `report` and `--help` never load
mitmproxy (each command imports its own root when it runs).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
import textwrap
from importlib.metadata import PackageNotFoundError, version

from inspector.options import OPTIONS, Option, seconds_problem, upstream_proxy_problem
from inspector.records.export import ExportTargetError
from inspector.run.report import EXIT_NOT_WRITTEN, EXIT_USAGE, RunError

PROG = "tunnel-inspector"
COMMANDS = ("demo", "probe", "open", "report")
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by SIGINT

# Which of the table's options go in which help group (inspector/options.py).
_CHAIN = ("trust", "client", "probe_timeout", "expiring_days", "connect_to")
_FAIL_ON = ("never", "warning", "error")


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a whole number, not {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a number, not {text!r}") from None


def _fail_on(text: str) -> str:
    if text not in _FAIL_ON:
        raise argparse.ArgumentTypeError(f"takes {', '.join(_FAIL_ON[:-1])} or {_FAIL_ON[-1]}, "
                                         f"not {text!r}")
    return text


class _Parser(argparse.ArgumentParser):
    """argparse with errors of one sentence: usage only for an unknown option."""

    command: str | None = None
    others: dict[str | None, _Parser] = {}  # every command's parser, to name an option's owner

    def error(self, message: str):
        unknown = message.startswith("unrecognized arguments: ")
        required = "the following arguments are required: "
        if unknown:
            sentence = self._unknown(message.split(": ", 1)[1].split())
        elif message.startswith(required):
            sentence = f"{self.prog} needs {message.removeprefix(required)}"
        else:
            sentence = _sentence(message)
        if unknown and sentence.startswith("unknown option"):
            self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{PROG}: {sentence}\n")

    def _unknown(self, tokens: list[str]) -> str:
        where = f"the {self.command} command" if self.command else "the proxy (no command)"
        first = tokens[0]
        if not first.startswith("-"):
            if self.command is None:
                return f"unknown command {first!r} (commands: {', '.join(COMMANDS)})"
            return f"unexpected argument {first!r} for {where}"
        flag = first.split("=", 1)[0]
        owners = [name or "the proxy (no command)" for name, p in self.others.items()
                  if flag in p._option_string_actions]
        if owners:
            return f"{flag} does not apply to {where}: it is an option of {', '.join(owners)}"
        return f"unknown option {flag} (see {self.prog} --help)"


def _sentence(message: str) -> str:
    """argparse's 'argument --x: why' as '--x why'."""
    if message.startswith("argument "):
        flag, _, why = message.removeprefix("argument ").partition(": ")
        if why == "expected one argument":
            why = "needs a value"
        return f"{flag} {why}"
    return message


def _table_option(g, o: Option) -> None:
    """One argument from the option table: the same name, default, help and check as
    the addon's mitmproxy option."""
    if o.type is bool:
        g.add_argument(o.flag, dest=o.name, action="store_false" if o.default else "store_true",
                       help=o.help)
    elif o.repeatable:  # None until given: the table's default then applies
        g.add_argument(o.flag, dest=o.name, action="append", metavar=o.metavar, help=o.help)
    else:
        kind = {int: _whole_number, float: _number}.get(o.type, str)
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
    g.add_argument("--listen-port", type=_whole_number, default=8080,
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
    _fail_on_option(g)
    for o in OPTIONS:
        if o.cli and o.name not in _CHAIN:
            _table_option(g, o)
    g.add_argument("--confdir", metavar="DIR", default="~/.mitmproxy",
                   help="--intercept only: where mitmproxy keeps its CA (made private, 0700)")
    g.add_argument("--duration", type=_number, metavar="S", help="stop after S seconds")
    _chain_options(p)


def _fail_on_option(g) -> None:
    g.add_argument("--fail-on", type=_fail_on, default="never", metavar="|".join(_FAIL_ON),
                   help="exit 1 if any tunnel had a finding of this severity or worse")


def _version(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", action="version", version=f"{PROG} {_installed_version()}")


def _installed_version() -> str:
    try:
        return version("tunnel-inspector")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


EXIT_STATUS = (
    "exit status: 0 done; 1 --fail-on found a tunnel at that severity; 2 a bad option, "
    "a port in use, or a --jsonl / --export-flagged that cannot be written (checked before "
    f"the proxy listens); {EXIT_NOT_WRITTEN} records could not be written during the run "
    "(a full disk): the summary line says how many were NOT written to --jsonl, and stderr "
    "whether the --export-flagged file is missing or incomplete."
)

COMMAND_HELP = (
    "commands (options may come before or after the command):\n"
    "  demo                  the built-in lab, scripted clients and the proxy\n"
    "  probe HOST[:PORT]     one chain verdict, no proxy\n"
    "  open FILE|DIR ...     recorded JSON Lines streams in the UI, merged by time\n"
    "  report FILE|DIR ...   the summary of recorded streams; --fail-on gates on them"
)


def build_parsers() -> dict[str | None, _Parser]:
    """One parser per command; None is the proxy without a command."""
    fmt = argparse.RawDescriptionHelpFormatter

    def parser(command: str | None, **kw) -> _Parser:
        p = _Parser(prog=f"{PROG} {command}" if command else PROG, allow_abbrev=False, **kw)
        p.command = command
        _version(p)
        return p

    top = parser(None, formatter_class=fmt, description=textwrap.fill(
        "A forward proxy that shows, for every CONNECT tunnel, the CONNECT target next to "
        "the client's SNI, how the TLS handshake ended, and a verdict on the upstream "
        "certificate chain. Without a command: the proxy and its live UI.") + "\n\n"
        + COMMAND_HELP, epilog=textwrap.fill(EXIT_STATUS))
    top.add_argument("--headless", action="store_true",
                     help="no UI: print one line per tunnel on stdout")
    _proxy_options(top)

    demo = parser("demo", description="Start lab TLS servers on 127.0.0.1, the proxy trusting "
                  "the lab root, and clients that reproduce each kind of breakage.",
                  epilog=EXIT_STATUS)
    demo.add_argument("--headless", action="store_true",
                      help="print the records' lines and exit when the clients are done")
    _proxy_options(demo)
    demo.set_defaults(listen_port=0)  # any free port: the demo must not collide with a real run

    pr = parser("probe", description="Handshake with HOST[:PORT] and print its chain and "
                "findings. Exit 0 clean, 1 flagged, 2 could not probe.")
    pr.add_argument("target", metavar="HOST[:PORT]")
    names = pr.add_mutually_exclusive_group()
    names.add_argument("--sni", metavar="NAME", help="send this SNI (default: HOST if a name)")
    names.add_argument("--no-sni", action="store_true", help="send no SNI")
    pr.add_argument("--json", action="store_true", help="print the record as JSON")
    _chain_options(pr)

    op = parser("open", description="Recorded JSON Lines streams in the UI: several files "
                "(or directories of *.jsonl, e.g. one file per CI runner) are merged by time.")
    op.add_argument("files", metavar="FILE|DIR", nargs="+")
    op.add_argument("--follow", action="store_true", help="keep reading as the files grow")
    op.add_argument("--export-dir", metavar="DIR", default=".",
                    help="where the `e` key writes exports (default: the working directory)")

    rep = parser("report", description="The summary of recorded streams (files, or "
                 "directories of *.jsonl), as a proxy run prints it at exit. Exit 0; 1 when "
                 "--fail-on finds a tunnel at that severity; 2 when a file cannot be read.")
    rep.add_argument("files", metavar="FILE|DIR", nargs="+")
    _fail_on_option(rep)

    parsers = {None: top, "demo": demo, "probe": pr, "open": op, "report": rep}
    _Parser.others = parsers
    return parsers


def build_parser() -> _Parser:
    """The parser of the proxy without a command."""
    return build_parsers()[None]


def _command_first(argv: list[str], parsers: dict[str | None, _Parser]) -> list[str]:
    """argv with the command moved to the front, the options before it kept in order
    after it: options mean the same wherever they are typed."""
    takes_value = {s for p in parsers.values() for a in p._actions if a.nargs != 0
                   for s in a.option_strings}
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            break
        if token.startswith("-") and token != "-":
            i += 2 if token in takes_value else 1
            continue
        if token in COMMANDS:
            return [token, *argv[:i], *argv[i + 1:]]
        break
    return argv


def parse(argv: list[str]) -> tuple[argparse.Namespace, _Parser]:
    parsers = build_parsers()
    argv = _command_first(argv, parsers)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    parser = parsers[command]
    args = parser.parse_args(argv[1:] if command else argv)
    args.command = command
    _validate(args, parser)
    return args, parser


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
    if getattr(args, "upstream_proxy", None) is not None and \
            (why := upstream_proxy_problem(args.upstream_proxy)):
        parser.error(f"--upstream-proxy {why}")
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
        print(f"{PROG}: warning: listening on {args.listen_host}: reachable from "
              "other machines" + ("" if args.proxy_auth else ", with no authentication"),
              file=sys.stderr)


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(name)s: %(message)s"))
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
    if args.command == "report":
        from inspector.run.report import run_report

        return run_report(args)
    if args.headless:
        from inspector.run.headless import run_headless

        return asyncio.run(run_headless(args))
    from inspector.run.live import run_live

    return run_live(args)


def main(argv: list[str] | None = None) -> int:
    args, _ = parse(sys.argv[1:] if argv is None else list(argv))
    if args.command in ("probe", "report") or getattr(args, "headless", False):
        _setup_logging()  # the UI routes logs to its own panel instead
    try:
        return _dispatch(args)
    except (RunError, ExportTargetError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # SIGINT where no handler of ours runs (probe, start-up)
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
