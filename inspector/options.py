"""The inspector's options, declared once: the addon's mitmproxy options and the
command line are both made from this table, and both check values with the same
functions, so `--set inspector_x=V` and `--x V` accept and refuse the same V.

Pure: no mitmproxy, no argparse. The addon turns an entry into `loader.add_option`
and a failed check into an OptionsError; the CLI into an argument and one sentence.
"""

from __future__ import annotations

import math
import os
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from inspector.observe.connect_to import ConnectTo, ConnectToError

HEAD_TIMEOUT_S = 30.0  # from accept to the blank line that ends the first request head

Check = Callable[[Any], "str | None"]  # what is wrong with a value, in a few words, or None


def seconds_problem(value: float) -> str | None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        return f"must be > 0 seconds, not {value}"
    return None


def upstream_proxy_problem(url: str) -> str | None:
    """What is wrong with an --upstream-proxy URL (http://HOST:PORT), or None."""
    wrong = f"takes http://HOST:PORT, not {url!r}"
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:  # a port that is not a number, or a bad IPv6 literal
        return wrong
    if parts.scheme != "http" or not parts.hostname or port is None or port == 0 \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        return wrong
    return None


def _days(value: int) -> str | None:
    return None if value >= 0 else f"must be >= 0, not {value}"


def _connect_to(value: Sequence[str]) -> str | None:
    try:
        ConnectTo(list(value))
    except ConnectToError as e:
        return str(e)
    return None


RELAY_PUMPS = ("auto", "splice", "protocol")


def _relay_pump(value: str) -> str | None:
    if value not in RELAY_PUMPS:
        return f"takes {', '.join(RELAY_PUMPS)}, not {value!r}"
    if value == "splice" and not splice_available():
        return "splice needs Linux (os.splice)"
    return None


def splice_available() -> bool:
    """os.splice exists: Linux with Python >= 3.10."""
    return sys.platform == "linux" and hasattr(os, "splice")


def relay_pump(fast_relay: bool, pump: str) -> str | None:
    """The relay a decided tunnel is handed to: "splice", "protocol", or None (mitmproxy's
    layers all the way, --no-fast-relay)."""
    if not fast_relay:
        return None
    if pump == "auto":
        return "splice" if splice_available() else "protocol"
    return pump


def _some_trust(value: Sequence[str]) -> str | None:
    return None if value else "needs at least one trust store"


@dataclass(frozen=True)
class Option:
    name: str  # the addon's option is inspector_<name>; the CLI's flag --<name-with-dashes>
    type: Any  # as mitmproxy's loader takes it: bool, int, float, str | None, Sequence[str]
    default: Any
    help: str
    check: Check | None = None
    metavar: str | None = None
    cli: bool = True  # also a command-line option (log_lines is for mitmdump -s only)

    @property
    def mitm_name(self) -> str:
        return f"inspector_{self.name}"

    @property
    def flag(self) -> str:
        """The CLI flag; a boolean that defaults to on is turned off with --no-<name>."""
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.type is bool and self.default else f"--{dashed}"

    @property
    def repeatable(self) -> bool:
        return self.type == Sequence[str]

    def problem(self, value: Any) -> str | None:
        return self.check(value) if self.check is not None else None


OPTIONS: tuple[Option, ...] = (
    Option("jsonl", str | None, None,
           "append one JSON record per tunnel to PATH, each a whole line", metavar="PATH"),
    Option("connect_to", Sequence[str], [],
           "send tunnels for HOST:PORT to HOST2:PORT2, SNI untouched, as curl's --connect-to "
           "(repeatable)", _connect_to, metavar="HOST:PORT:HOST2:PORT2"),
    Option("handshake_timeout", float, 10.0,
           "stop observing a handshake after S seconds and record it as timed out; the "
           "tunnel itself goes on (default 10)", seconds_problem, metavar="S"),
    Option("connect_head_timeout", float, HEAD_TIMEOUT_S,
           "seconds a client has, from connecting, to send its request head; then it is "
           f"closed without a record and counted (default {HEAD_TIMEOUT_S:g})", seconds_problem,
           metavar="S"),
    Option("trust", Sequence[str], ["mozilla"],
           "what a normal client trusts: a PEM bundle, mozilla (certifi) or system "
           "(repeatable; default mozilla)", _some_trust, metavar="PATH|mozilla|system"),
    Option("client", Sequence[str], [],
           "judge the chain for a client with its own root store, e.g. an old device "
           "(repeatable)", metavar="NAME=PATH"),
    Option("probe", bool, True,
           "fetch the chains the relay cannot see (TLS 1.3) with a probe handshake; off: "
           "chains only where the relay sees them (TLS <= 1.2)"),
    Option("probe_timeout", float, 5.0,
           "seconds a probe handshake may take (default 5)", seconds_problem, metavar="S"),
    Option("expiring_days", int, 30,
           "warn when a certificate expires within N days (default 30)", _days, metavar="N"),
    Option("intercept", bool, False,
           "terminate TLS with mitmproxy's CA (the client must trust it); the upstream gets "
           "exactly the client's SNI, none if none"),
    Option("fast_relay", bool, True,
           "once a handshake is decided, relay the tunnel's sockets directly instead of "
           "through mitmproxy's layers (same bytes and half-closes; faster); off: for comparison"),
    Option("relay_pump", str, "auto",
           "how the fast relay moves bytes: splice (in the kernel, through pooled pipes; "
           "Linux), protocol (asyncio protocols), auto (splice where available; default)",
           _relay_pump, metavar="|".join(RELAY_PUMPS)),
    Option("log_lines", bool, False,
           "log one line per tunnel through mitmproxy's log (for mitmdump -s)", cli=False),
)

BY_MITM_NAME = {o.mitm_name: o for o in OPTIONS}


def mitm_values(args: Any) -> dict[str, Any]:
    """The addon's option values from parsed command-line arguments."""
    out = {}
    for o in OPTIONS:
        if o.cli and hasattr(args, o.name):
            value = getattr(args, o.name)
            out[o.mitm_name] = o.default if value is None else value
    return out
