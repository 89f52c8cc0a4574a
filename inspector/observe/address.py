"""How an address is written: one place, so `::1:443` never appears anywhere."""

from __future__ import annotations


def host_port(host: object, port: object) -> str:
    """`host:port`, an IPv6 address in brackets as in a URL: `::1:443` reads as nothing."""
    h = str(host)
    return f"[{h}]:{port}" if ":" in h and not h.startswith("[") else f"{h}:{port}"


def format_address(addr: tuple | None) -> str | None:
    return host_port(addr[0], addr[1]) if addr else None
