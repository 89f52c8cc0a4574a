"""SNI versus CONNECT target: host names normalised, read and compared.

Pure functions. The CONNECT host and the SNI both come from the client and may be
anything; nothing here raises on strange input, it reports it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final, Literal

from inspector.observe.wire import ClientHello

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


Ech = Literal["grease", "outer"]  # the record's client_hello.ech (records/schema.py)
ECH_GREASE: Final = "grease"
ECH_OUTER: Final = "outer"


def ech_mode(connect_host: str, ch: ClientHello) -> Ech | None:
    """Encrypted Client Hello: None without the extension; "grease" when the SNI is the
    CONNECT host (Chromium sends the extension on every handshake to keep it usable);
    "outer" when it names another host: the real name is encrypted and the SNI is the
    provider's public name. The two look alike on the wire by design."""
    if not ch.ech:
        return None
    if ch.sni_raw is None:
        return ECH_GREASE
    sni = normalise_host(decode_sni(ch.sni_raw)) if ch.sni_raw.isascii() else None
    return ECH_GREASE if sni is not None and sni == normalise_host(connect_host) else ECH_OUTER
