"""Analysis: a finished tunnel in, findings out. Pure; no I/O, no mitmproxy."""

from __future__ import annotations

from collections.abc import Sequence

from inspector.findings import advice
from inspector.findings.codes import Finding, finding
from inspector.findings.handshake import outcome_findings
from inspector.findings.sni import sni_findings
from inspector.observe.address import host_port
from inspector.observe.bad_request import bad_request_detail
from inspector.observe.handshake import CLIENT_LEFT_SILENTLY
from inspector.observe.sni import ech_mode
from inspector.observe.stacks import identify
from inspector.observe.wire import looks_like_tls
from inspector.records.record import Tunnel

# Chain findings that explain why a client would refuse the server's certificate.
_REFUSAL_REASONS = ("hostname-mismatch", "untrusted", "incomplete-chain", "expired",
                    "not-yet-valid", "self-signed")
# How a client that refuses a certificate without an alert leaves (Node in TLS 1.3).
_SILENT_REFUSALS = (CLIENT_LEFT_SILENTLY,
                    "the client closed after the server's certificate, without an alert")


def tunnel_findings(t: Tunnel, rejected_proxy: bool = False,
                    chain_findings: Sequence[Finding] = ()) -> list[Finding]:
    """SNI, handshake and chain findings; rejected_proxy: see findings.handshake.outcome_findings."""
    ch = t.client_hello
    stack = identify(ch).name if ch is not None else None
    out: list[Finding] = []
    if ch is not None:
        out += sni_findings(t.connect_host, ch.sni_raw, ch.sni_present,
                            ech=ech_mode(t.connect_host, ch),
                            missing_hint=advice.SNI_MISSING.get(stack))
    outcome = outcome_findings(
        t.outcome or "closed", t.alert, t.detail, ch is not None, rejected_proxy,
        offer=ch, chosen=t.server_hello, stack=stack, client_certificate=t.client_certificate,
    )
    reasons = [f.code for f in chain_findings if f.code in _REFUSAL_REASONS]
    if reasons and t.detail in _SILENT_REFUSALS:
        # The client left without a word after the server's certificate, and the chain
        # verdict says why: that is a refused certificate, not an aborted handshake.
        outcome = [finding(
            "client-rejected-certificate",
            f"the client closed without an alert right after the server's certificate; the "
            f"chain verdict explains it: {', '.join(reasons)}",
            "Some clients (Node in TLS 1.3) check the certificate after their TLS library's "
            "handshake and just close: see the chain findings.",
        ) if f.code == "handshake-aborted" else f for f in outcome]
    return out + outcome + list(chain_findings)


def loop_finding(connect_host: str, connect_port: int, reason: str) -> Finding:
    return finding(
        "proxy-loop",
        f"CONNECT {host_port(connect_host, connect_port)} leads back into the proxy: {reason}",
        "Refused, so the proxy does not tunnel into itself: the client sent the proxy's own "
        "address as its destination (or a --connect-to rule maps to it); use the real server's.",
    )


def bad_request_finding(opening: bytes) -> Finding:
    if looks_like_tls(opening[:3]):
        return finding(
            "bad-connect",
            bad_request_detail(opening),
            "The client's proxy URL says https://; tunnel-inspector is an http:// proxy "
            "(set http://HOST:PORT).",
        )
    return finding(
        "bad-connect",
        bad_request_detail(opening),
        "The client's proxy support sends a malformed request: CONNECT needs host:port "
        "with a port from 1 to 65535.",
    )
