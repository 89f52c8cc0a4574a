"""SNI versus CONNECT target: normalisation and the findings it leads to.

Pure functions. The CONNECT host and the SNI both come from the client and may be
anything; nothing here raises on strange input, it reports it.
"""

from __future__ import annotations

import ipaddress
import re

from .findings import Finding, finding

_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")


def ip_literal(host: str) -> str | None:
    """The canonical text of an IP address literal (brackets allowed), or None."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def normalise_host(host: str) -> str | None:
    """Lowercase A-label form without a trailing dot; None if it is not a hostname.

    Two names that a TLS stack would treat as the same host normalise equal:
    `Example.COM.` and `example.com`, `bücher.example` and `xn--bcher-kva.example`.
    """
    name = host.rstrip(".") if host.endswith(".") and not host.endswith("..") else host
    if not name or len(name) > 253:
        return None
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    name = name.lower()
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        return None
    return name


def sni_bytes(host: str) -> bytes:
    """The server_name bytes a client sends for `host`: the A-label form of an IDN,
    otherwise the name as typed."""
    if host.isascii():
        return host.encode("ascii")
    try:
        return host.encode("idna")
    except UnicodeError:
        return host.encode("utf-8", "surrogateescape")


def decode_sni(raw: bytes) -> str:
    """The SNI as text for the record: undecodable bytes stay visible as \\xNN."""
    return raw.decode("utf-8", "backslashreplace")


def sni_findings(connect_host: str, sni_raw: bytes | None, sni_present: bool) -> list[Finding]:
    """What the ClientHello's server_name says next to the CONNECT target."""
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
                    "The client must send SNI: set the TLS server name to the CONNECT host "
                    "(many clients drop it when they connect through a proxy, e.g. hackney "
                    "needs ssl: [server_name_indication: host]).",
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
