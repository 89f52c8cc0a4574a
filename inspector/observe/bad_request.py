"""What a client sent the proxy when no request could be parsed from it.

mitmproxy answers a malformed CONNECT line (bad host, port 99999, garbage) with 400
and fires no hook; the addon keeps the first bytes so such a client still gets a
record saying what it sent. Pure functions over those bytes.
"""

from __future__ import annotations

from inspector.observe.wire import looks_like_tls

OPENING_BYTES = 256  # enough for a request line; a record never carries more


def _first_line(opening: bytes) -> str:
    return opening.split(b"\r\n", 1)[0].split(b"\n", 1)[0].decode("latin-1")


def unparsed_target(opening: bytes) -> tuple[str, int]:
    """The CONNECT target as the client wrote it, as far as it can be read."""
    parts = _first_line(opening).split(" ")
    if len(parts) < 2 or parts[0].upper() != "CONNECT":
        return "", 0
    host, _, port = parts[1].rpartition(":")
    if not host:
        return parts[1], 0
    return host, int(port) if port.isdigit() and int(port) < 65536 else 0


def bad_request_detail(opening: bytes) -> str:
    if looks_like_tls(opening[:3]):
        return "the client started TLS with the proxy itself instead of sending CONNECT"
    return f"the proxy could not parse the client's request: {_first_line(opening)[:120]!r}"
