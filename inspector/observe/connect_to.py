"""`--connect-to HOST:PORT:HOST2:PORT2` with curl's meaning.

Tunnels to HOST:PORT are connected to HOST2:PORT2 instead, so a migration target can
be tested without touching DNS; the client's CONNECT line and SNI stay as they are.
As in curl, an empty HOST or PORT matches any, an empty HOST2 or PORT2 keeps the
original, and IPv6 addresses go in brackets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_PART = r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]*)"
_SPEC = re.compile(rf"{_PART}:(\d*):{_PART}:(\d*)\Z")


class ConnectToError(ValueError):
    pass


def _port(text: str, spec: str) -> int | None:
    if not text:
        return None
    port = int(text)
    if not 0 < port < 65536:
        raise ConnectToError(f"--connect-to {spec!r}: port {port} is out of range 1-65535")
    return port


def _host(text: str) -> str | None:
    return text[1:-1].lower() if text.startswith("[") else (text.lower() or None)


class ConnectTo:
    def __init__(self, specs: Iterable[str]) -> None:
        self._rules: list[tuple[str | None, int | None, str | None, int | None]] = []
        for spec in specs:
            m = _SPEC.match(spec)
            if m is None:
                raise ConnectToError(
                    f"--connect-to {spec!r} is not HOST:PORT:HOST2:PORT2 "
                    "(e.g. api.example.com:443:127.0.0.1:8443)"
                )
            h1, p1, h2, p2 = m.groups()
            self._rules.append((_host(h1), _port(p1, spec), _host(h2), _port(p2, spec)))

    def target(self, host: str, port: int) -> tuple[str, int] | None:
        """Where a tunnel to host:port goes instead; None when no rule applies."""
        host = host.lower()
        for h1, p1, h2, p2 in self._rules:
            if (h1 is None or h1 == host) and (p1 is None or p1 == port):
                return (h2 or host, p2 or port)
        return None
