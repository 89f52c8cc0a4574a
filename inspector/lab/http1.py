"""The bit of HTTP/1 the lab's blocking clients and servers speak: a CONNECT through
the proxy, and reading a request or response head."""

from __future__ import annotations

import socket
import ssl


def read_head(sock: socket.socket, limit: int = 65536) -> bytes:
    """Bytes up to and including the blank line ending a head; what came if the peer
    closed first or the head passed `limit`. On a plain socket nothing after the head
    is consumed: a server that speaks first may send its greeting right behind the
    proxy's 200 (a TLS socket cannot peek; there the head is all the peer sends)."""
    peek = not isinstance(sock, ssl.SSLSocket)
    head = b""
    while b"\r\n\r\n" not in head and len(head) < limit:
        if not peek:
            chunk = sock.recv(4096)
        elif ahead := sock.recv(4096, socket.MSG_PEEK):
            end = (head[-3:] + ahead).find(b"\r\n\r\n")
            chunk = sock.recv(len(ahead) if end < 0 else end + 4 - len(head[-3:]))
        else:
            chunk = b""
        if not chunk:
            break
        head += chunk
    return head


def connect_tunnel(proxy_port: int, host: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A socket with an established CONNECT tunnel through the proxy on 127.0.0.1;
    ConnectionError (naming the proxy's answer) when the proxy does not answer 200."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    sock.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    head = read_head(sock, 8192)
    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
        sock.close()
        raise ConnectionError(f"CONNECT answered {head[:80]!r}")
    return sock
