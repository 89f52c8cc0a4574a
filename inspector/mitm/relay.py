"""The tunnel's relay inside mitmproxy: raw bytes both ways, shown to an observer first.

This is the one module that relies on mitmproxy internals beyond its addon API. Each
assumption is named where it is used; all were read in mitmproxy 11.0.2 and 12.x, where
these files are identical (proxy/layers/tcp.py, proxy/server.py's ConnectionHandler).

Why not mitmproxy's own TCPLayer: inside a CONNECT tunnel its half-close becomes a full
close (HttpStream.passthrough turns CloseTcpConnection into CloseConnection, "to be
consistent with half-closes ... always full close for now"). A client that sends its
request and shuts its write side then never gets the reply, and the server's reply
meets EPIPE. A proxy that is there to explain failures must not cause one, so this
layer ends each direction on its own, on the socket itself, exactly as a direct
connection would.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mitmproxy import ctx
from mitmproxy.connection import Connection, ConnectionState
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.utils import expect

log = logging.getLogger(__name__)

Observe = Callable[[bool, bytes], None]  # (from_client, data), before it is relayed
SideClosed = Callable[[bool], None]  # (from_client), as each side ends its sending
Closed = Callable[[], None]  # both directions are over


class TunnelRelay(layer.Layer):
    """Relays a CONNECT tunnel's bytes unmodified, with TCP half-close kept.

    Built without a TCPFlow, like an ignored host: no tcp_* hook fires (a hook is
    dispatched to every addon, and those hooks were most of the inspector's cost over
    bare mitmproxy). The observer sees each chunk before it is relayed and is dropped
    with stop_observing(): from then on a chunk costs one attribute check.
    """

    def __init__(self, context, observe: Observe | None, side_closed: SideClosed | None,
                 closed: Closed | None) -> None:
        super().__init__(context)
        self._observe = observe
        self._side_closed = side_closed
        self._closed = closed

    def stop_observing(self) -> None:
        self._observe = self._side_closed = self._closed = None

    @expect(events.Start)
    def start(self, _) -> layer.CommandGenerator[None]:
        _keep_idle_tunnel_open(self.context.client)
        if self.context.server.timestamp_start is None:  # lazy strategy / upstream proxy
            err = yield commands.OpenConnection(self.context.server)
            if err:
                yield commands.CloseConnection(self.context.client)
                self._handle_event = self.done
                return
        self._handle_event = self.relay

    _handle_event = start

    @expect(events.DataReceived, events.ConnectionClosed)
    def relay(self, event: events.Event) -> layer.CommandGenerator[None]:
        assert isinstance(event, events.ConnectionEvent)
        from_client = event.connection == self.context.client
        to = self.context.server if from_client else self.context.client
        if isinstance(event, events.DataReceived):
            if self._observe is not None:
                self._observe(from_client, event.data)
            yield commands.SendData(to, event.data)
            return
        if self._side_closed is not None:
            self._side_closed(from_client)
        client, server = self.context.client, self.context.server
        if not (client.state & ConnectionState.CAN_READ or server.state & ConnectionState.CAN_READ):
            self._handle_event = self.done
            if server.state is not ConnectionState.CLOSED:
                yield commands.CloseConnection(server)
            if client.state is not ConnectionState.CLOSED:
                yield commands.CloseConnection(client)
            if self._closed is not None:
                self._closed()
        elif not _half_close(self.context.client, to):
            # No transport to shut down (not a plain socket): end the tunnel rather than
            # leave the peer waiting for an end that never comes.
            yield commands.CloseConnection(server)
            yield commands.CloseConnection(client)

    @expect(events.DataReceived, events.ConnectionClosed)
    def done(self, _) -> layer.CommandGenerator[None]:
        yield from ()


def _handler(client: Connection):
    # Assumption: the proxyserver addon keeps each live client's ConnectionHandler in
    # `connections`, keyed by the client connection's id (addons/proxyserver.py).
    server = ctx.master.addons.get("proxyserver") if ctx.master else None
    return server.connections.get(client.id) if server is not None else None


def _half_close(client: Connection, conn: Connection) -> bool:
    """Shut down the write side of `conn`'s socket (after what is queued), as a FIN.

    Assumption: the handler's `transports[conn].writer` is the asyncio StreamWriter of
    that socket; in a tunnel through an upstream proxy, `conn` is the virtual server
    and the socket is the handler's one other transport. `write_eof` sends queued data
    first; the state flag keeps mitmproxy from writing after it.
    """
    if not conn.state & ConnectionState.CAN_WRITE:
        return True
    handler = _handler(client)
    if handler is None:
        return False
    io = handler.transports.get(conn)
    if io is None and conn is not client:
        others = [t for c, t in handler.transports.items() if c is not client]
        io = others[0] if len(others) == 1 else None
    writer = getattr(io, "writer", None)
    if writer is None or not hasattr(writer, "write_eof") or not writer.can_write_eof():
        return False
    try:
        if not writer.is_closing():
            writer.write_eof()
    except OSError:
        return False
    conn.state &= ~ConnectionState.CAN_WRITE
    return True


def _keep_idle_tunnel_open(client: Connection) -> None:
    """A direct connection has no idle timeout; mitmproxy closes one after 10 minutes.

    Assumption: the handler's TimeoutWatchdog.disarm() context holds the timeout off
    while entered; the watchdog dies with the handler, so it is never left.
    """
    handler = _handler(client)
    if handler is not None:
        handler.timeout_watchdog.disarm().__enter__()
