"""The findings the SNI leads to, next to the CONNECT target (pure)."""

from __future__ import annotations

from inspector.findings.codes import Finding, finding
from inspector.observe.sni import ECH_OUTER, decode_sni, ip_literal, normalise_host


def sni_findings(connect_host: str, sni_raw: bytes | None, sni_present: bool, *,
                 ech: str | None = None, missing_hint: str | None = None) -> list[Finding]:
    """What the ClientHello's server_name says next to the CONNECT target.

    ech: `ech_mode`; with "outer" the SNI is the provider's public name by design.
    missing_hint: what the client's own stack needs to send SNI (findings/advice.py).
    """
    connect_ip = ip_literal(connect_host)
    out: list[Finding] = []
    if connect_ip is not None:
        out.append(
            finding(
                "connect-ip",
                f"CONNECT target is an IP address ({connect_ip}); "
                + ("the client sent no SNI" if sni_raw is None else "the SNI names the host"),
                "Fine if the server needs no SNI; if it hosts several names, connect by name "
                "so the client can send SNI.",
            )
        )
    if sni_raw is None:
        if sni_present:
            out.append(
                finding(
                    "sni-invalid",
                    "ClientHello has an empty server_name extension",
                    "Fix the client's TLS setup: set server_name_indication to the host name.",
                )
            )
        elif connect_ip is None:
            out.append(
                finding(
                    "sni-missing",
                    f"CONNECT {connect_host} but the ClientHello has no SNI",
                    missing_hint or "The client must send SNI: set the TLS server name to the "
                    "CONNECT host (many clients drop it when they connect through a proxy, e.g. "
                    "hackney needs ssl: [server_name_indication: host]).",
                )
            )
        return out

    sni_text = decode_sni(sni_raw)
    sni_norm = normalise_host(sni_text) if sni_raw.isascii() else None
    if sni_norm is None:
        out.append(
            finding(
                "sni-invalid",
                f"SNI {sni_text!r} is not a valid host name",
                "Servers ignore or refuse such a name: fix the host name the client passes "
                "to its TLS library.",
            )
        )
        return out
    if ip_literal(sni_text) is not None:
        out.append(
            finding(
                "sni-invalid",
                f"SNI carries an IP address ({sni_text}); RFC 6066 allows only host names",
                "Make the client send no SNI when it connects by IP, or connect by name.",
                severity="warning",
            )
        )
        return out
    if ech == ECH_OUTER:
        out.append(
            finding(
                "ech",
                f"Encrypted Client Hello: the real host name is encrypted; the SNI {sni_text} "
                f"is the provider's public name (CONNECT {connect_host})",
                f"Nothing to fix: the chain is judged against the CONNECT host {connect_host}.",
            )
        )
        return out
    if connect_ip is None:
        connect_norm = normalise_host(connect_host)
        if connect_norm != sni_norm:
            out.append(
                finding(
                    "sni-mismatch",
                    f"SNI {sni_text} differs from the CONNECT host {connect_host}",
                    "The server picks its certificate and virtual host by SNI: make the "
                    "client send the host it asked the proxy for.",
                )
            )
    return out
