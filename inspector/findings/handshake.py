"""The findings a handshake's outcome leads to, with their hints (pure).

The state machine that decides the outcome is inspector/observe/handshake.py; this
module only says what an outcome means and what to do about it, naming the client's
TLS stack where that changes the cause (inspector/findings/advice.py).
"""

from __future__ import annotations

from inspector.findings import advice
from inspector.findings.codes import Finding, finding
from inspector.observe import wire
from inspector.observe.handshake import (
    CERTIFICATE_REJECTIONS,
    CLIENT_ALERT,
    CONNECT_FAILED,
    ESTABLISHED,
    NOT_TLS,
    SERVER_ALERT,
    TIMEOUT,
    AlertSeen,
    ClientCertificate,
)
from inspector.observe.names import cipher_suite_names, group_names
from inspector.observe.stacks import ERLANG, JAVA


def outcome_findings(
    outcome: str,
    alert: AlertSeen | None,
    detail: str | None,
    client_hello_seen: bool,
    rejected_proxy: bool = False,
    *,
    offer: wire.ClientHello | None = None,
    chosen: wire.ServerHello | None = None,
    stack: str | None = None,
    client_certificate: ClientCertificate | None = None,
) -> list[Finding]:
    """The findings a handshake outcome leads to (none for a clean `established`).

    rejected_proxy: intercept mode, where a client's refusal is of the proxy's own
    certificate, not the server's. offer, chosen: the client's and server's hellos, to
    explain a failed negotiation; stack: the client's TLS library (observe/stacks.py),
    for its own hints; client_certificate: TLS <= 1.2 mutual TLS as seen in clear.
    """
    if outcome == ESTABLISHED:
        return []
    if rejected_proxy:
        return [
            finding(
                "client-rejected-certificate",
                f"the client refused the proxy's certificate: {detail}",
                "In --intercept mode the client must trust mitmproxy's CA "
                "(mitmproxy-ca-cert.pem in the --confdir, ~/.mitmproxy unless set); or run in "
                "passthrough mode, which needs no CA.",
            )
        ]
    if outcome == CONNECT_FAILED:
        return [
            finding(
                "upstream-unreachable",
                f"the proxy could not connect upstream: {detail}",
                "Check the host name resolves and the port is open from the proxy's network "
                "(or the --connect-to mapping).",
            )
        ]
    if outcome == NOT_TLS:
        if detail and detail.startswith("malformed ClientHello"):
            return [
                finding(
                    "not-tls",
                    detail,
                    "The client's first bytes look like TLS but do not parse: a broken TLS "
                    "stack, or another protocol on this port.",
                    severity="error",
                )
            ]
        if detail and detail.startswith("the server"):
            return [
                finding(
                    "not-tls",
                    detail,
                    "The upstream port does not speak TLS: check the port, or whether the "
                    "server expects plaintext.",
                    severity="error",
                )
            ]
        return [
            finding(
                "not-tls",
                detail or "the client did not start TLS inside the tunnel",
                "The client spoke another protocol through CONNECT (e.g. http:// over a "
                "tunnel): expected if the port is not TLS, otherwise check the URL scheme.",
            )
        ]
    if outcome == SERVER_ALERT and alert is not None and alert.client_certificate:
        if alert.code is None:
            message = ("the server ended the TLS 1.3 handshake with an encrypted alert right "
                       "after the client's certificate and Finished: it requires a client "
                       "certificate, or refused the one sent")
        else:
            sent = client_certificate.get("sent") if client_certificate else None
            answer = _CLIENT_CERTIFICATE_SENT.get(sent, "")
            message = (f"the server asked for a client certificate, then refused the "
                       f"handshake: {_alert_text(alert)}{answer}")
        return [finding("server-alert", message, _CLIENT_CERTIFICATE_HINT)]
    if outcome == SERVER_ALERT and alert is not None:
        return [_server_alert(alert, offer, chosen)]
    if outcome == CLIENT_ALERT and alert is not None:
        stack_hint = advice.CERTIFICATE_REJECTED.get(stack)
        if alert.code is None:
            padded = " (JSSE pads it to 35 bytes)" if stack == JAVA else ""
            return [
                finding(
                    "client-rejected-certificate",
                    "the client aborted the TLS 1.3 handshake with an encrypted alert"
                    f"{padded} right after the server's certificate: most likely it rejected "
                    "the certificate",
                    stack_hint or "Compare the served chain with what the client trusts (its "
                    "CA bundle or pinned keys); see the chain verdict.",
                )
            ]
        if alert.code in CERTIFICATE_REJECTIONS or (stack == ERLANG and alert.code == 40
                                                    and chosen is not None):
            return [
                finding(
                    "client-rejected-certificate",
                    f"the client rejected the server's certificate: {_alert_text(alert)}",
                    stack_hint or "Compare the served chain with what the client trusts (its "
                    "CA bundle, an old device's root store, pinned keys); see the chain verdict.",
                )
            ]
        return [
            finding(
                "handshake-aborted",
                f"the client aborted the handshake: {_alert_text(alert)}",
                "The client and server disagree on TLS parameters (versions, ciphers, ALPN): "
                "compare the ClientHello's offer with the server's configuration.",
            )
        ]
    if outcome == TIMEOUT:
        return [
            finding(
                "handshake-aborted",
                f"the handshake timed out: {detail}",
                "A side stalled: a firewall dropping packets, a server that waits for SNI "
                "it never gets, or an overloaded server.",
            )
        ]
    if detail and detail.startswith("the client closed"):
        return [
            finding(
                "handshake-aborted",
                detail,
                "The client gave up waiting for the server: a client timeout shorter than "
                "the server's answer, or a server that never answers this ClientHello.",
            )
        ]
    if not client_hello_seen:
        return [
            finding(
                "handshake-aborted",
                detail or "the tunnel closed before a ClientHello",
                "The client opened a tunnel and gave up before TLS: a client-side timeout "
                "or a connection check.",
                severity="warning",
            )
        ]
    return [
        finding(
            "handshake-aborted",
            detail or "the tunnel closed before the handshake finished",
            "A silent close is how some servers refuse a ClientHello (no SNI, no shared "
            "version or cipher): try openssl s_client with and without -servername.",
        )
    ]


def _server_alert(alert: AlertSeen, offer: wire.ClientHello | None,
                  chosen: wire.ServerHello | None) -> Finding:
    """A server's refusal, with what the client offered where that is the likely cause."""
    message = f"the server refused the handshake: {_alert_text(alert)}"
    hint = _SERVER_ALERT_HINTS.get(alert.code, _SERVER_ALERT_DEFAULT)
    if offer is None:
        return finding("server-alert", message, hint)
    versions = ", ".join(wire.version_name(v) for v in offer.offered_versions)
    if alert.code == 70:
        top = max(offer.offered_versions)
        likely = ("a newer version than the client's newest" if top < 0x0304
                  else "an older version than the client's oldest")
        message += f"; no TLS version in common: the client offers {versions}"
        hint = (f"The client offers {versions}; the server supports none of them, most likely "
                f"{likely}: widen the client's versions (or the server's).")
    elif alert.code == 40 and chosen is None:
        suites, groups = cipher_suite_names(offer.cipher_suites), group_names(offer.supported_groups)
        message += (f" before choosing anything: no cipher suite or group in common (the client "
                    f"offers {len(suites)} suites, groups {', '.join(groups) or 'none'})")
        if offer.sni_raw is None:
            message += "; the client also sent no SNI"
        hint = ("Compare the client's cipher suites and groups (detail pane) with the server's "
                "configuration (e.g. a server that requires ECDSA, CHACHA20 or post-quantum "
                "groups, or a client limited to old suites)" + ("; and send SNI." if
                offer.sni_raw is None else "."))
    elif alert.code == 71:
        message += f"; the server wants stronger parameters than the client offers ({versions})"
        hint = ("The server requires stronger cipher suites or versions than the client offers "
                "(e.g. only TLS 1.3, or only AEAD suites): compare the offer in the detail pane "
                "with the server's minimum.")
    elif alert.code == 120:
        offered = ", ".join(offer.alpn) or "nothing"
        message += f"; no application protocol in common: the client offers ALPN {offered}"
        hint = (f"ALPN mismatch: the client offers {offered}, the server supports none of them "
                "(e.g. a gRPC client that needs h2 against a server with HTTP/1.1 only): align them.")
    elif alert.code == 116:
        message += "; the server requires a client certificate and the client sent none"
        hint = advice.CLIENT_CERTIFICATE_REQUIRED
    return finding("server-alert", message, hint)


def _alert_text(alert: AlertSeen) -> str:
    d = alert.to_dict()
    return d["description"] if d["code"] is None else f"{d['description']} ({d['code']})"


_CLIENT_CERTIFICATE_HINT = (
    "The server wants mutual TLS: configure the client's certificate and key, issued by a "
    "CA the server accepts for clients (openssl s_client -cert/-key reproduces it)."
)
_SERVER_ALERT_DEFAULT = (
    "Compare the ClientHello (SNI, versions, ALPN) with what the server accepts."
)
# What the client answered a certificate request with: None when it was not seen.
_CLIENT_CERTIFICATE_SENT: dict[bool | None, str] = {
    True: "; the client sent one", False: "; the client sent none"}
# Keyed by alert code; an encrypted alert (code None) has no hint of its own.
_SERVER_ALERT_HINTS: dict[int | None, str] = {
    112: "The server does not serve this name: check the SNI the client sends, or add "
    "the name to the server's virtual hosts.",
    40: "No shared parameters, or the server needs SNI the client did not send: compare "
    "versions, ciphers and SNI with the server's configuration.",
    70: "The server refuses the client's TLS version: upgrade the client or widen the "
    "server's accepted versions.",
    120: "The server supports none of the client's ALPN protocols (h2, http/1.1): align them.",
    116: "The server requires a client certificate: configure one in the client.",
    48: "The server rejected the client certificate's issuer: check the client certificate.",
    42: "The server rejected the client certificate: check the client certificate.",
}
