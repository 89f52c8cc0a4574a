"""Analysis: a finished tunnel in, findings out. Pure; no I/O, no mitmproxy."""

from __future__ import annotations

from inspector.findings.codes import Finding
from inspector.observe.handshake import outcome_findings
from inspector.records.record import Tunnel
from inspector.observe.sni import sni_findings


def tunnel_findings(t: Tunnel, rejected_proxy: bool = False) -> list[Finding]:
    """SNI and handshake findings; rejected_proxy: see handshake.outcome_findings."""
    out: list[Finding] = []
    if t.client_hello is not None:
        out += sni_findings(t.connect_host, t.client_hello.sni_raw, t.client_hello.sni_present)
    out += outcome_findings(
        t.outcome or "closed", t.alert, t.detail, t.client_hello is not None, rejected_proxy
    )
    return out
