"""One tunnel, explained: what the client asked for, what happened, why, what to fix.

Pure: a record dict in, rich renderables out. Every string from the record passes
`inspector.records.escape.safe` and becomes `rich.text.Text` (never markup), so a certificate
subject of "[bold]x\\x1b]0;y" is shown exactly like that.
"""

from __future__ import annotations

import datetime as dt

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from inspector.records.escape import safe
from inspector.records.text import (
    SNI_MISMATCH,
    SNI_MISSING,
    SNI_NOT_SEEN,
    outcome_text,
    sni_state,
    target_text,
)
from inspector.records.text import codes as finding_codes
from inspector.tui.model import chain_verdict

SEVERITY_STYLE = {"error": "bold red", "warning": "bold yellow", "info": "dim"}
LABEL = "bold"
MUTED = "dim"


def _t(value: object, style: str = "") -> Text:
    """Untrusted value -> inert Text."""
    return Text(safe(value), style=style)


def parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def _date(value: object, now: dt.datetime, *, is_end: bool) -> Text:
    when = parse_time(value)
    if when is None:
        return _t(value or "-", MUTED)
    text = when.strftime("%Y-%m-%d")
    if is_end and when < now:
        return Text(f"{text} expired", style="bold red")
    if not is_end and when > now:
        return Text(f"{text} not yet", style="bold red")
    if is_end and when - now < dt.timedelta(days=30):
        return Text(text, style="yellow")
    return Text(text)


def section(title: str) -> Text:
    return Text(f"\n{title}", style="bold underline")


class ByWidth:
    """The wide rendering where it fits, the narrow one where not: the pane's width is
    known only when it is drawn, and a 9-column table squeezed into 80 columns drops
    the subject and issuer, the very columns the reader needs."""

    def __init__(self, min_width: int, wide: RenderableType, narrow: RenderableType) -> None:
        self.min_width, self.wide, self.narrow = min_width, wide, narrow

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.wide if options.max_width >= self.min_width else self.narrow


def render_detail(record: dict, now: dt.datetime | None = None) -> RenderableType:
    """Everything the UI knows about one tunnel, findings first."""
    now = now or dt.datetime.now(dt.timezone.utc)
    parts: list[RenderableType] = [_identity(record), _target_and_sni(record)]
    parts += _findings(record)
    parts += _chain(record, now)
    parts += _handshake(record)
    return Group(*parts)


def _identity(record: dict) -> Text:
    text = Text()
    text.append("tunnel ", MUTED)
    text.append_text(_t(record.get("id")))
    text.append("   started ", MUTED)
    text.append_text(_t(record.get("started")))
    text.append("   client ", MUTED)
    text.append_text(_t(record.get("client")))
    upstream = record.get("upstream")
    text.append("   upstream ", MUTED)
    if isinstance(upstream, dict):
        text.append_text(_t(upstream.get("address")))
    else:
        text.append("never connected", "yellow")
    return text


def _target_and_sni(record: dict) -> Table:
    """The CONNECT target and the SNI side by side: the comparison the tool exists for."""
    connect = record.get("connect") or {}
    sni = record.get("sni")
    hello = record.get("client_hello")
    state = sni_state(record, finding_codes(record))  # as the findings say
    if state == SNI_NOT_SEEN:
        sni_text = Text("(no ClientHello seen)", MUTED)
    elif sni is None:
        sni_text = Text("(none): the ClientHello had no server_name",
                        "bold white on red" if state == SNI_MISSING else MUTED)
    else:
        sni_text = _t(sni, "bold black on yellow" if state == SNI_MISMATCH else "bold")
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False, padding=(0, 2),
                  header_style="bold", show_edge=False)
    table.add_column(Text("CONNECT target (proxy request)"), ratio=1)
    table.add_column(Text("SNI (TLS ClientHello)"), ratio=1)
    table.add_row(Text(target_text(connect.get("host"), connect.get("port")), "bold"), sni_text)
    if isinstance(hello, dict):
        table.add_row(_client_text(hello), _offer_text(hello, record.get("server_hello")))
    return table


def _text(value: object) -> str:
    """A string field of a read-back record, or "" when it holds anything else."""
    return value if isinstance(value, str) else ""


def _client_text(hello: dict) -> Text:
    """Which client: its TLS stack (when the ClientHello tells) and its JA4."""
    stack = hello.get("stack")
    text = Text("client stack ", MUTED)
    text.append_text(_t(stack, "bold") if stack else Text("unknown", MUTED))
    if hello.get("ja4"):
        text.append("   JA4 ", MUTED)
        text.append_text(_t(hello.get("ja4"), MUTED))
    return text


def _offer_text(hello: dict, chosen: object) -> Text:
    """The client's offer, each part next to what the server chose from it."""
    chosen = chosen if isinstance(chosen, dict) else None

    def pick(key: str) -> str:
        if chosen is None:
            return ""
        return f" → {safe(chosen.get(key) or 'none')}"

    offered = ", ".join(safe(v) for v in hello.get("versions") or ()) or "-"
    alpn = ", ".join(safe(v) for v in hello.get("alpn") or ()) or "-"
    suites = len(hello.get("cipher_suites") or ())
    text = Text(f"offers {offered}{pick('version')}; ALPN {alpn}{pick('alpn')}; "
                f"{suites} cipher suites{pick('cipher_suite')}", MUTED)
    if hello.get("ech"):
        text.append(f"; ECH {safe(hello.get('ech'))}", MUTED)
    return text


def _findings(record: dict) -> list[RenderableType]:
    findings = [f for f in record.get("findings") or () if isinstance(f, dict)]
    out: list[RenderableType] = [section(f"Findings ({len(findings)})")]
    if not findings:
        out.append(Text("none: nothing wrong was seen on this tunnel", "green"))
        return out
    order = {"error": 0, "warning": 1, "info": 2}
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, width=7)
    grid.add_column(ratio=1)  # wraps inside its column: hints are sentences
    # A record read back may hold any JSON value (a list is not even hashable).
    for f in sorted(findings, key=lambda f: order.get(_text(f.get("severity")), 3)):
        severity = _text(f.get("severity"))
        sev = severity if severity in SEVERITY_STYLE else "info"
        body = Text()
        body.append_text(_t(f.get("code"), "bold"))
        body.append("  ")
        body.append_text(_t(f.get("message")))
        if f.get("hint"):
            body.append("\nfix: ", "cyan")
            body.append_text(_t(f.get("hint")))
        grid.add_row(Text(sev.upper(), SEVERITY_STYLE[sev]), body)
    out.append(grid)
    return out


def _handshake(record: dict) -> list[RenderableType]:
    hs = record.get("handshake") or {}
    line = Text()
    outcome = hs.get("outcome")
    line.append_text(Text(outcome_text(hs), "bold green" if outcome == "established" else "bold red"))
    line.append("   version ", MUTED)
    line.append_text(_t(hs.get("version") or "-"))
    alert = hs.get("alert")
    line.append("   alert ", MUTED)
    if isinstance(alert, dict):
        code = alert.get("code")
        line.append_text(_t(
            f"{safe(alert.get('from'))} sent {safe(alert.get('description'))}"
            + (f" ({safe(code)})" if code is not None else ""), "red"))
    else:
        line.append("none")
    if hs.get("ms") is not None:
        line.append("   decided after ", MUTED)
        line.append_text(_t(f"{hs.get('ms')} ms"))
    out: list[RenderableType] = [section("Handshake"), line]
    if hs.get("detail"):
        out.append(_t(hs.get("detail")))
    cc = hs.get("client_certificate")
    if isinstance(cc, dict):
        answer = cc.get("sent")
        sent = ("the client sent one" if answer is True else "the client sent none" if answer is False
                else "no answer seen")
        out.append(Text(f"the server asked for a client certificate; {sent}"))
    hello = record.get("client_hello")
    if isinstance(hello, dict) and record.get("server_hello") is None and outcome != "established":
        # refused before the server chose anything: the offer is what to compare
        for label, key in (("offered cipher suites", "cipher_suites"), ("offered groups", "groups")):
            text = Text(f"{label}: ", MUTED)
            text.append_text(_t(", ".join(safe(v) for v in hello.get(key) or ()) or "none"))
            out.append(text)
    return out


def _chain(record: dict, now: dt.datetime) -> list[RenderableType]:
    chain = record.get("chain")
    if not isinstance(chain, dict):
        return [section("Certificate chain"),
                Text("no chain verdict for this tunnel (not seen, not probed, or not analysed)", MUTED)]
    verdict = chain_verdict(chain)
    head = Text()
    head.append(f"verdict {verdict}", {"trusted": "bold green", "untrusted": "bold red",
                                       "partial": "bold yellow"}.get(verdict, MUTED))
    head.append("   source ", MUTED)
    head.append_text(_t(chain.get("source")))
    out: list[RenderableType] = [section("Certificate chain (as served)"), head]

    certs = [c for c in chain.get("certificates") or () if isinstance(c, dict)]
    if certs:
        out.append(ByWidth(120, _certificate_table(certs, now), _certificate_blocks(certs, now)))
    else:
        out.append(Text("no certificates recorded", MUTED))

    path = chain.get("path")
    if isinstance(path, list) and path:
        line = Text("validated path: ", MUTED)
        line.append_text(_t(" → ".join(safe(p)[:12] for p in path)))
        out.append(line)

    profiles = chain.get("profiles")
    if isinstance(profiles, dict) and profiles:
        out.append(section("Trust profiles"))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style=LABEL)
        grid.add_column()
        grid.add_column()
        narrow: list[RenderableType] = []
        for name, p in profiles.items():
            if not isinstance(p, dict):
                continue
            ok = p.get("trusted") is True
            verdict_text = Text("trusted" if ok else "untrusted", "green" if ok else "bold red")
            if p.get("kind"):
                verdict_text.append(f"  ({safe(p.get('kind'))})", MUTED)
            error = _t(p.get("error") or "")
            grid.add_row(_t(name), verdict_text, error)
            narrow.append(Text.assemble(_t(name, LABEL), "  ", verdict_text))
            if error:
                narrow.append(Padding(error, (0, 0, 0, 4)))
        out.append(ByWidth(100, grid, Group(*narrow)))
    return out


def _certificate_table(certs: list[dict], now: dt.datetime) -> Table:
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False)
    for name, kw in (("#", {"width": 1}), ("subject", {"ratio": 1}), ("issuer", {"ratio": 1}),
                     ("not before", {"no_wrap": True}), ("not after", {"no_wrap": True}),
                     ("key", {"no_wrap": True}), ("signature", {"no_wrap": True}),
                     ("SHA-256", {"no_wrap": True}), ("in path", {"no_wrap": True})):
        table.add_column(Text(name), overflow="fold", **kw)
    for i, c in enumerate(certs):
        table.add_row(
            Text(str(i)),
            _t(c.get("subject")),
            _t(c.get("issuer")),
            _date(c.get("not_before"), now, is_end=False),
            _date(c.get("not_after"), now, is_end=True),
            _t(c.get("key") or "-"),
            _t(c.get("signature") or "-"),
            _t(safe(c.get("sha256"))[:12] or "-", MUTED),
            _in_path(c),
        )
    return table


def _certificate_blocks(certs: list[dict], now: dt.datetime) -> Group:
    """The same fields as the table, one block per certificate, for a narrow pane."""
    blocks: list[RenderableType] = []
    for i, c in enumerate(certs):
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style=MUTED, no_wrap=True, width=10)
        grid.add_column(ratio=1, overflow="fold")
        in_path = c.get("in_path") is True
        grid.add_row(Text(f"#{i}", LABEL), Text("✓ in the validated path", "green") if in_path
                     else Text("not in the validated path", MUTED))
        grid.add_row("subject", _t(c.get("subject")))
        grid.add_row("issuer", _t(c.get("issuer")))
        grid.add_row("valid", Text.assemble(_date(c.get("not_before"), now, is_end=False), " to ",
                                            _date(c.get("not_after"), now, is_end=True)))
        grid.add_row("key", Text.assemble(_t(c.get("key") or "-"), "   ", _t(c.get("signature") or "-")))
        grid.add_row("SHA-256", _t(safe(c.get("sha256"))[:12] or "-", MUTED))
        blocks.append(grid)
    return Group(*blocks)


def _in_path(cert: dict) -> Text:
    return Text("✓", "green") if cert.get("in_path") is True else Text("-", MUTED)
