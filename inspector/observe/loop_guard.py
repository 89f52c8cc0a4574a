"""Is a connection's target the proxy itself?

A CONNECT to the proxy's own listener nests the proxy in itself: one client socket
nested 300 levels held 609 descriptors and wrote 307 junk records, and an upstream
proxy URL naming the proxy itself exhausted descriptors from one CONNECT. mitmproxy's
own guard compares host strings ("127.0.0.1", "localhost", ...), so `0.0.0.0`, `127.1`,
`2130706433`, `0x7f000001` or `[::ffff:127.0.0.1]` went through.

Here a target is compared as an address: numeric forms are read by getaddrinfo with
AI_NUMERICHOST, the parser the connection itself goes through (it never touches the
network), IPv4-mapped IPv6 is read as IPv4, and `localhost` names are loopback
(RFC 6761). A listener on the unspecified address owns every local address, a loopback
listener all of its family's loopback range (127/8, ::1), and the unspecified address
as a target reaches the local host. A name needs its addresses (`needs_resolving`):
only on one of the proxy's own ports, since no other port can reach it. Pure functions,
but for `is_local_address`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable

from inspector.observe.address import host_port

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Listener = tuple  # (host, port, ...) as a listening socket's getsockname() gives it


def numeric_address(host: str) -> Address | None:
    """The address a numeric host means to getaddrinfo (dotted, short `127.1`, decimal,
    hex, octal, IPv6 with or without brackets); None for a name. IPv4-mapped comes back as IPv4."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        return None
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except (socket.gaierror, UnicodeError, ValueError):
        return None
    host = str(infos[0][4][0])  # an IP sockaddr's host is text (typeshed allows int for others)
    addr = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _is_localhost_name(host: str) -> bool:
    name = host.lower().rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def _listener_address(host: str) -> Address:
    """A listening socket's address; "" (mitmproxy's "every interface") is unspecified."""
    return numeric_address(host) or ipaddress.IPv4Address(0)


def _reaches(target: Address, listener: Address,
             is_local: Callable[[Address], bool] | None) -> bool:
    """Whether a connection to `target` lands on a socket listening on `listener` (same port)."""
    if target == listener or target.is_unspecified:
        return True
    if listener.is_unspecified:
        return target.is_loopback or (is_local is not None and is_local(target))
    return listener.is_loopback and target.is_loopback and target.version == listener.version


def _sentence(host: str, port: int, listener: Listener) -> str:
    return (f"{host_port(host, port)} is this proxy's own listening address "
            f"({host_port(listener[0] or '*', listener[1])})")


def loop_reason(host: str, port: int, listening: Iterable[Listener],
                is_local: Callable[[Address], bool] | None = None) -> str | None:
    """Why connecting to host:port would reach one of the proxy's listeners (a sentence),
    or None when it does not, or cannot be known without resolving a name.

    is_local(address): whether an address is this host's, asked only when a listener is
    on the unspecified address (`is_local_address`; without it, only loopback counts).
    """
    if _is_localhost_name(host):
        targets: list[Address] = [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")]
    elif (addr := numeric_address(host)) is not None:
        targets = [addr]
    else:
        return None
    for listener in listening:
        if listener[1] == port and any(
            _reaches(t, _listener_address(listener[0]), is_local) for t in targets
        ):
            return _sentence(host, port, listener)
    return None


def needs_resolving(host: str, port: int, listening: Iterable[Listener]) -> bool:
    """A name (neither numeric nor localhost) on one of the listening ports: only its
    addresses can tell. On any other port a connection cannot reach the proxy."""
    return (any(listener[1] == port for listener in listening)
            and not _is_localhost_name(host) and numeric_address(host) is None)


def is_local_address(address: Address) -> bool:
    """Whether `address` is one of this host's: only a local address can be bound.
    The one function here that makes a system call (a bind; no traffic)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((str(address), 0))
        except OSError:
            return False
    return True
