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

Once the handshake is decided, nothing is left to observe and the tunnel has relayed
HANDOVER_AFTER more bytes (a short tunnel is over before a hand-over pays), it is handed
to `FastRelay`: the two sockets' asyncio transports get protocols that write what
one reads straight into the other, with asyncio's own flow control. mitmproxy's
per-chunk path (a reader task, the layer stack, a writer) is left out, and with it
most of the relay's cost; mitmproxy still owns the connections and closes them when
the relay tells it both sides are done, so its hooks fire as before. On Linux the
default hand-over goes further (`KernelRelay`): the sockets' bytes move by splice()
through pooled pipes (inspector/mitm/splice.py) and never reach Python; the protocol
relay is the fallback where splice is missing or refuses the sockets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Callable

from mitmproxy import ctx
from mitmproxy.connection import Connection, ConnectionState
from mitmproxy.proxy import commands, events, layer
from mitmproxy.proxy.layers.http import HttpStream
from mitmproxy.proxy.layers.http._upstream_proxy import HttpUpstreamProxy
from mitmproxy.proxy.utils import expect

from inspector.mitm import splice
from inspector.options import splice_available

log = logging.getLogger(__name__)

Observe = Callable[[bool, bytes], None]  # (from_client, data), before it is relayed
SideClosed = Callable[[bool], None]  # (from_client), as each side ends its sending
Closed = Callable[[], None]  # both directions are over


def is_inside_connect(context) -> bool:
    """The layer being chosen carries a CONNECT tunnel's bytes: it sits right under the
    CONNECT's HTTP stream, or under the upstream proxy's tunnel (a private mitmproxy
    module, whose layer type is the only way to tell)."""
    return bool(context.layers) and isinstance(context.layers[-1], (HttpStream, HttpUpstreamProxy))


class TunnelRelay(layer.Layer):
    """Relays a CONNECT tunnel's bytes unmodified, with TCP half-close kept.

    Built without a TCPFlow, like an ignored host: no tcp_* hook fires (a hook is
    dispatched to every addon, and those hooks were most of the inspector's cost over
    bare mitmproxy). The observer sees each chunk before it is relayed and is dropped
    with stop_observing(): from then on a chunk costs one attribute check.
    """

    def __init__(self, context, observe: Observe | None, side_closed: SideClosed | None,
                 closed: Closed | None, pump: str | None = "protocol",
                 failed: Callable[[str], None] | None = None) -> None:
        super().__init__(context)
        self._failed = failed  # the server connection could not be opened (an upstream proxy's refusal)
        self._observe = observe
        self._side_closed = side_closed
        self._closed = closed
        self._pump = pump  # hand the sockets to this relay once nothing is observed (None: never)
        self._handover_asked = False
        self._unobserved = 0  # bytes relayed here since observation stopped

    def stop_observing(self) -> None:
        self._observe = self._side_closed = self._closed = None

    @expect(events.Start)
    def start(self, _) -> layer.CommandGenerator[None]:
        _keep_idle_tunnel_open(self.context.client)
        if self.context.server.timestamp_start is None:  # lazy strategy / upstream proxy
            err = yield commands.OpenConnection(self.context.server)
            if err:
                if self._failed is not None:
                    self._failed(str(err))
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
            if self._observe is None and self._pump is not None and not self._handover_asked:
                self._unobserved += len(event.data)
                if self._unobserved >= HANDOVER_AFTER:
                    self._handover_asked = True
                    FastRelay.begin(self.context.client, self._handed_over, self._pump)
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

    def _handed_over(self) -> None:
        self._handle_event = self.handed_over

    @expect(events.ConnectionClosed)
    def handed_over(self, event: events.Event) -> layer.CommandGenerator[None]:
        # FastRelay ended both directions itself and fed mitmproxy an end of stream:
        # all that is left is mitmproxy's own teardown.
        self._handle_event = self.done
        for conn in (self.context.server, self.context.client):
            if conn.state is not ConnectionState.CLOSED:
                yield commands.CloseConnection(conn)

    @expect(events.DataReceived, events.ConnectionClosed)
    def done(self, _) -> layer.CommandGenerator[None]:
        yield from ()


# A hand-over costs a short tunnel more than it saves (bench/bench_proxy.py throughput,
# handed over at once: 0.94x the tunnels/s of --no-fast-relay); past this many bytes it pays.
HANDOVER_AFTER = 256 << 10


def _handler(client: Connection):
    # Assumption: the proxyserver addon keeps each live client's ConnectionHandler in
    # `connections`, keyed by the client connection's id (addons/proxyserver.py).
    server = ctx.master.addons.get("proxyserver") if ctx.master else None
    return server.connections.get(client.id) if server is not None else None


def _io_pair(client: Connection):
    """(client ConnectionIO, server ConnectionIO) of a tunnel, or None.

    Assumption: the handler's `transports` holds the client and exactly one other
    connection with a socket: the server, or in a tunnel through an upstream proxy,
    the connection to that proxy (the tunnel's server is then a virtual one).
    """
    handler = _handler(client)
    if handler is None or client not in handler.transports:
        return None
    others = [io for c, io in handler.transports.items() if c is not client]
    return (handler.transports[client], others[0]) if len(others) == 1 else None


def close_idle(client_id: str) -> asyncio.Task | None:
    """Close a connection the way mitmproxy closes an idle one (its inactivity timeout
    cancels the reader), or None if it is gone. Assumption: the handler's
    `on_timeout()` does exactly that."""
    server = ctx.master.addons.get("proxyserver") if ctx.master else None
    handler = server.connections.get(client_id) if server is not None else None
    return None if handler is None else asyncio.ensure_future(handler.on_timeout())


async def close_connections(proxyserver, timeout: float = 5.0) -> None:
    """End the tunnels still open, the way mitmproxy ends one whose client left.

    Left to asyncio.run()'s final cancellation instead, each open tunnel's handler dies
    with a CancelledError traceback on Python 3.11. Assumption (mitmproxy internals):
    `proxyserver.connections` maps client ids to ConnectionHandlers, whose
    `transports[client].handler` is the task reading the client; cancelling it makes
    handle_client close the other transports and fire client_disconnected.
    """
    handlers = list(proxyserver.connections.values())
    for handler in handlers:
        io = handler.transports.get(handler.client)
        if io is not None and io.handler is not None:
            io.handler.cancel("the proxy is stopping")
    deadline = asyncio.get_running_loop().time() + timeout
    while proxyserver.connections and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)


def _half_close(client: Connection, conn: Connection) -> bool:
    """Shut down the write side of `conn`'s socket (after what is queued), as a FIN.

    Assumption: the handler's `transports[conn].writer` is the asyncio StreamWriter of
    that socket; in a tunnel through an upstream proxy, `conn` is the virtual server
    and the socket is the handler's one other transport. `write_eof` sends queued data
    first; the state flag keeps mitmproxy from writing after it.
    """
    if not conn.state & ConnectionState.CAN_WRITE:
        return True
    pair = _io_pair(client)
    if pair is None:
        return False
    io = pair[0] if conn is client else pair[1]
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


class _Side(asyncio.Protocol):
    """One socket of a handed-over tunnel: what it reads is written to the other."""

    def __init__(self, relay: FastRelay, transport: asyncio.Transport) -> None:
        self.relay = relay
        self.transport = transport
        self.peer: _Side  # the other side: set by FastRelay once both exist
        self.ended = False  # this side sent its end (FIN): passed on as a half-close

    def data_received(self, data: bytes) -> None:
        self.peer.transport.write(data)

    def eof_received(self) -> bool:
        self.ended = True
        if not self.peer.transport.is_closing():
            self.peer.transport.write_eof()  # after what is queued, as a FIN
        self.relay.side_ended()
        return True  # keep this socket open: the other direction may still flow

    # Flow control: when this socket's send buffer is full, stop reading its peer.
    def pause_writing(self) -> None:
        self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.lost(self, exc)


class FastRelay:
    """Both sockets of a decided tunnel, relayed by asyncio protocols of our own.

    Each direction ends on its own (half-close); a reset on one side is passed on as a
    reset; when both directions are over, the original protocols come back and
    mitmproxy's readers get their end of stream, so mitmproxy closes the connections
    and fires its hooks exactly as for a tunnel it relayed itself.
    """

    def __init__(self, pair) -> None:
        self._ios = pair
        self._originals = [io.writer.transport.get_protocol() for io in pair]
        self._sides = [_Side(self, io.writer.transport) for io in pair]
        self._sides[0].peer, self._sides[1].peer = self._sides[1], self._sides[0]
        self._finished = False

    handed_over = 0  # tunnels taken over in this process, for tests and benchmarks

    @classmethod
    def begin(cls, client: Connection, taken: Callable[[], None], pump: str) -> None:
        """Take the tunnel's sockets over once mitmproxy holds none of their bytes.

        Reading stops on both sockets first; what mitmproxy already read still goes
        its way (the layer keeps relaying it), and once both of its reader tasks wait
        on empty buffers the sockets change hands: no byte can overtake another. If
        that moment does not come (a side ended meanwhile), mitmproxy simply goes on
        relaying the tunnel itself. `pump` is "splice" (KernelRelay, falling back to
        the protocols) or "protocol".
        """
        pair = _io_pair(client)
        if pair is None or not all(_plain_stream(io) for io in pair):
            return
        for io in pair:
            io.writer.transport.pause_reading()
        asyncio.get_running_loop().call_soon(cls._swap_when_idle, pair, taken, pump, _SWAP_TRIES)

    @classmethod
    def _swap_when_idle(cls, pair, taken: Callable[[], None], pump: str, tries: int) -> None:
        for io in pair:
            # asyncio's StreamReader resumes a transport that it paused itself (its buffer
            # was full) once mitmproxy reads: pause again, or bytes would slip past.
            if io.writer.transport.is_reading():
                io.writer.transport.pause_reading()
        # splice writes to the sockets themselves: nothing may wait in a transport's buffer
        empty = pump == "splice"
        if not all(_parked(io, empty) for io in pair):
            if tries > 0 and not any(io.writer.transport.is_closing() or io.reader.at_eof()
                                     for io in pair):
                asyncio.get_running_loop().call_later(_SWAP_WAIT, cls._swap_when_idle,
                                                      pair, taken, pump, tries - 1)
                return
            for io in pair:  # not now: mitmproxy keeps the tunnel
                if not io.writer.transport.is_closing():
                    io.writer.transport.resume_reading()
            return
        taken()
        if pump != "splice" or not KernelRelay.take(pair):
            cls.take(pair)

    @classmethod
    def take(cls, pair) -> None:
        """Relay a parked pair (reading paused, mitmproxy holding none of its bytes)."""
        relay = cls(pair)
        cls.handed_over += 1
        for side in relay._sides:
            side.transport.set_protocol(side)
            side.transport.resume_reading()

    def side_ended(self) -> None:
        if all(s.ended for s in self._sides):
            self._finish()

    def lost(self, side: _Side, exc: Exception | None) -> None:
        if not side.peer.transport.is_closing():
            if exc is not None:
                _reset(side.peer.transport)  # a reset on one side is a reset on the other
            else:
                side.peer.transport.close()
        self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        for io, original, side in zip(self._ios, self._originals, self._sides):
            if not side.transport.is_closing():
                side.transport.set_protocol(original)
            io.reader.feed_eof()  # mitmproxy's reader task wakes up to an end of stream


# How often, and how far apart, the hand-over looks for mitmproxy's readers to be idle:
# it takes one or two loop turns; 200 x 5 ms bounds a stuck one to a second.
_SWAP_TRIES = 200
_SWAP_WAIT = 0.005


def _plain_stream(io) -> bool:
    return (isinstance(io.reader, asyncio.StreamReader)
            and isinstance(io.writer, asyncio.StreamWriter)
            and hasattr(io.writer.transport, "set_protocol"))


def _parked(io, empty: bool = False) -> bool:
    """mitmproxy holds nothing of this socket: its reader task waits on an empty buffer,
    and its writer cannot be waiting in drain() (`empty`: its write buffer is empty).

    Assumption (asyncio internals, stable since 3.7): a StreamReader's `_buffer` holds
    bytes received but not yet read, and `_waiter` is set while a read() waits for more.
    drain() cannot wait while the write buffer is at or below its low mark.
    """
    reader, transport = io.reader, io.writer.transport
    if transport.is_closing() or reader.at_eof() or len(reader._buffer):
        return False
    waiter = reader._waiter
    low, _ = transport.get_write_buffer_limits()
    return waiter is not None and not waiter.done() \
        and transport.get_write_buffer_size() <= (0 if empty else low)


def _reset(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:  # linger 0: close() sends RST, as the peer's own reset did
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class _Watch(asyncio.Protocol):
    """Stands in for mitmproxy's protocol while the kernel relays: reading is paused and
    nothing is written, so only a close (mitmproxy's own, e.g. the proxy stopping) can
    reach it; the relay then lets go of the socket's duplicate."""

    def __init__(self, relay: KernelRelay, original: asyncio.BaseProtocol) -> None:
        self.relay, self.original = relay, original

    def connection_lost(self, exc: Exception | None) -> None:
        self.relay.lost()
        self.original.connection_lost(exc)


class KernelRelay:
    """Both sockets of a decided tunnel, relayed by splice() (splice.SpliceTunnel) on
    duplicates of their descriptors; mitmproxy's transports stay, paused and idle.

    Duplicates, not the transports' own descriptors: the loop lets add_reader() watch a
    descriptor no transport holds, and mitmproxy's close still closes its own. When the
    tunnel ends, the ends and resets were already passed on by the splice relay; the
    original protocols come back and mitmproxy's readers get their end of stream, as in
    FastRelay.
    """

    handed_over = 0  # tunnels taken over in this process, for tests and benchmarks

    def __init__(self, pair, socks: list[socket.socket]) -> None:
        self._ios = pair
        self._transports = [io.writer.transport for io in pair]
        self._originals = [t.get_protocol() for t in self._transports]
        self._tunnel = splice.SpliceTunnel(asyncio.get_running_loop(), socks[0], socks[1],
                                           self._done)

    @classmethod
    def take(cls, pair) -> bool:
        """Relay a parked pair with splice; False if it cannot (then nothing changed)."""
        if not splice_available():
            return False
        socks: list[socket.socket] = []
        try:
            for io in pair:
                sock = io.writer.transport.get_extra_info("socket")
                if sock is None or sock.type != socket.SOCK_STREAM:
                    raise OSError(f"not a stream socket: {sock!r}")
                socks.append(socket.socket(fileno=os.dup(sock.fileno())))
        except OSError as e:  # e.g. out of descriptors: the protocol relay needs none
            log.debug("no splice relay for this tunnel: %s", e)
            for s in socks:
                s.close()
            return False
        relay = cls(pair, socks)
        cls.handed_over += 1
        for t, original in zip(relay._transports, relay._originals):
            t.set_protocol(_Watch(relay, original))
        relay._tunnel.start()
        return True

    def _done(self, result: str) -> None:
        for t, original in zip(self._transports, self._originals):
            t.set_protocol(original)
        if result == splice.UNSUPPORTED:  # not a byte moved: the protocols take over
            FastRelay.take(self._ios)
            return
        if result in (splice.RESET_A, splice.RESET_B):
            # the splice relay set linger 0 and closed its duplicate: this close is the RST
            self._transports[0 if result == splice.RESET_A else 1].abort()
        for io in self._ios:
            io.reader.feed_eof()  # mitmproxy's reader task wakes up to an end of stream

    def lost(self) -> None:
        """mitmproxy closed one socket under the relay: close the other, as FastRelay."""
        if self._tunnel.over:
            return
        self._tunnel.stop()
        for t, original in zip(self._transports, self._originals):
            t.set_protocol(original)
            if not t.is_closing():
                t.close()
        for io in self._ios:
            io.reader.feed_eof()
