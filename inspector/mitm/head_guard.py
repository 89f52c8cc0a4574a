"""A size limit on the client's request head, inside mitmproxy's HTTP/1 server layer.

mitmproxy buffers a request head until its blank line, without bound ("FIXME: protect
against header size DoS" in proxy/layers/http/_http1.py), and before any hook fires, so
before --proxy-auth: one client sending header lines forever grew the proxy by 514 MB
and stalled it 10 s when it closed. `http_layer(...)` is the layer mitmproxy's NextLayer
addon would choose for an explicit proxy's client connection, with an HTTP/1 server
that closes a head larger than `max_bytes` (answering 431).

The check runs only while a head is being read: once a tunnel is established the layer
is mitmproxy's own passthrough, with no extra work per chunk.
"""

from __future__ import annotations

from collections.abc import Callable

from mitmproxy import connection
from mitmproxy.net.tls import starts_like_tls_record
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layers import modes
from mitmproxy.proxy.layers.http import Http1Server, HttpLayer, HTTPMode

TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
             b"Content-Length: 0\r\nConnection: close\r\n\r\n")


class HeadLimitedHttp1Server(Http1Server):
    def __init__(self, context: Context, max_bytes: int,
                 too_large: Callable[[connection.Client], None],
                 left: Callable[[connection.Client], None]) -> None:
        super().__init__(context)
        self._max_bytes = max_bytes
        self._too_large = too_large  # told once, before the connection is closed
        self._left = left  # the client closed with part of a head sent: nothing malformed

    def read_headers(self, event):
        if isinstance(event, events.ConnectionClosed) and bytes(self.buf).strip():
            self._left(self.context.client)
        yield from super().read_headers(event)
        # Still reading the same head (no blank line yet), and already too much of it.
        if self.state == self.read_headers and len(self.buf) > self._max_bytes:
            self.state = self.done
            self.buf = type(self.buf)()  # let the bytes go now, not when the socket is gone
            self._too_large(self.context.client)
            yield commands.SendData(self.conn, TOO_LARGE)
            yield commands.CloseConnection(self.conn)


def applies(context: Context, first_bytes: bytes) -> bool:
    """True for a plain-TCP client connection to an explicit HTTP proxy (what
    NextLayer would hand to an HttpLayer without TLS in front)."""
    return (
        context.client.transport_protocol == "tcp"
        and len(context.layers) == 1
        and isinstance(context.layers[0], (modes.HttpProxy, modes.HttpUpstreamProxy))
        and not starts_like_tls_record(first_bytes)  # TLS to the proxy: NextLayer's business
    )


def http_layer(context: Context, max_bytes: int,
               too_large: Callable[[connection.Client], None],
               left: Callable[[connection.Client], None]) -> layer.Layer:
    """mitmproxy's HttpLayer for an explicit proxy, its HTTP/1 server head-limited."""
    upstream = isinstance(context.layers[0], modes.HttpUpstreamProxy)
    http = HttpLayer(context, HTTPMode.upstream if upstream else HTTPMode.regular)
    # HttpLayer keeps a connection layer that is already set ("may have been set by
    # client playback"); forked after HttpLayer joined the stack, as it forks its own.
    http.connections[context.client] = HeadLimitedHttp1Server(
        context.fork(), max_bytes, too_large, left)
    return http
