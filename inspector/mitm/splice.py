"""A kernel relay for two connected stream sockets: splice() through pooled pipes (Linux).

Pure sockets and an asyncio loop's add_reader/add_writer: no mitmproxy here (relay.py
hands a decided tunnel's sockets to `SpliceTunnel` and takes them back at the end).

Each direction moves bytes source socket -> pipe -> destination socket without copying
them to userland. A direction holds a pipe only while bytes are in flight: it takes one
from the pool when its source becomes readable and gives it back once the pipe is empty,
so an idle tunnel holds none. It reads again only after the pipe is empty (back-pressure:
a destination that does not take the bytes stops the reading of its source, the kernel's
socket buffers then stop the sender). An end of stream is passed on as a half-close
(shutdown of the destination's write side) once the pipe is empty; a reset or error on
one socket is passed on as a reset of the other, as a direct connection would show.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import socket
import struct
from collections.abc import Callable

log = logging.getLogger(__name__)

_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
# Pipes of 1 MiB: a fourth of the CPU per GB of 64 KiB ones (bench/bench_proxy.py bulk,
# 0.25 vs 0.57 s/GB). Their pages are the sockets' own (splice moves references), but each
# counts against the user's pipe-user-pages-soft (64 MiB by default): the pool keeps few.
PIPE_SIZE = 1 << 20
CHUNK = PIPE_SIZE  # one splice in fills the pipe at most
BURST = 4  # chunks one direction moves per readiness callback before others get a turn
# splice() refuses this pair of files: nothing moved, so the caller may relay otherwise
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}

ENDED, RESET_A, RESET_B, UNSUPPORTED = "ended", "reset a", "reset b", "unsupported"
Done = Callable[[str], None]


class PipePool:
    """Idle pipes kept for reuse, at most `keep`; more are made while more directions
    are active at once (a hard bound could stall a tunnel behind another's slow reader)
    and closed when given back to a full pool. A pipe is given back only empty."""

    def __init__(self, keep: int = 16) -> None:
        self.keep = keep
        self._idle: list[tuple[int, int]] = []
        self.made = 0  # pipes ever made, for tests and benchmarks

    def take(self) -> tuple[int, int]:
        if self._idle:
            return self._idle.pop()
        pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(pipe[1], fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError as e:  # over the user's pipe budget: the default size works, slower
            log.debug("pipe kept at its default size: %s", e)
        self.made += 1
        return pipe

    def give(self, pipe: tuple[int, int]) -> None:
        if len(self._idle) < self.keep:
            self._idle.append(pipe)
        else:
            self.discard(pipe)

    @staticmethod
    def discard(pipe: tuple[int, int]) -> None:
        """A pipe that may still hold bytes (its tunnel was reset): never reused."""
        os.close(pipe[0])
        os.close(pipe[1])

    @property
    def idle(self) -> int:
        return len(self._idle)


POOL = PipePool()


class _Direction:
    """One way of a tunnel: src -> pipe -> dst."""

    def __init__(self, tunnel: SpliceTunnel, src: socket.socket, dst: socket.socket) -> None:
        self.tunnel = tunnel
        self.src, self.dst = src, dst
        self.pipe: tuple[int, int] | None = None  # held while `pending` > 0
        self.pending = 0  # bytes in the pipe, not yet written to dst
        self.ended = False  # src sent its end, passed on to dst as a half-close
        self.retry: asyncio.TimerHandle | None = None  # waiting for a pipe (no descriptors)

    def readable(self) -> None:
        for _ in range(BURST):
            if self.pipe is None:
                try:
                    self.pipe = self.tunnel.pool.take()
                except OSError as e:  # out of file descriptors: try again shortly
                    self.tunnel.wait_for_pipe(self, e)
                    return
            try:
                n = os.splice(self.src.fileno(), self.pipe[1], CHUNK, flags=_FLAGS)
            except BlockingIOError:
                break
            except OSError as e:
                self.tunnel.failed(self, e, reading=True)
                return
            if n == 0:
                self._ended()
                return
            self.tunnel.moved = True
            self.pending = n
            if not self.flush():
                return
        self._give_back_pipe()

    def flush(self) -> bool:
        """Write the pipe out; False if dst cannot take it all now (then it waits for
        dst's writability, its source unread) or the tunnel failed."""
        assert self.pipe is not None
        while self.pending:
            try:
                n = os.splice(self.pipe[0], self.dst.fileno(), self.pending, flags=_FLAGS)
            except BlockingIOError:
                n = 0
            except OSError as e:
                self.tunnel.failed(self, e, reading=False)
                return False
            if n == 0:
                loop = self.tunnel.loop
                loop.remove_reader(self.src.fileno())
                loop.add_writer(self.dst.fileno(), self.writable)
                return False
            self.pending -= n
        return True

    def writable(self) -> None:
        if self.flush():
            self.tunnel.loop.remove_writer(self.dst.fileno())
            self._give_back_pipe()
            self.tunnel.loop.add_reader(self.src.fileno(), self.readable)

    def _give_back_pipe(self) -> None:
        if self.pipe is not None and not self.pending:
            self.tunnel.pool.give(self.pipe)
            self.pipe = None

    def _ended(self) -> None:
        self.tunnel.loop.remove_reader(self.src.fileno())
        self._give_back_pipe()
        self.ended = True
        try:
            self.dst.shutdown(socket.SHUT_WR)  # the peer sees a FIN, as from a direct connection
        except OSError as e:  # dst is gone already: its own direction reports how
            log.debug("half-close after the end of stream failed: %s", e)
        self.tunnel.direction_ended()

    def stop(self) -> None:
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        loop = self.tunnel.loop
        loop.remove_reader(self.src.fileno())
        loop.remove_writer(self.dst.fileno())
        if self.pipe is not None:
            if self.pending:
                self.tunnel.pool.discard(self.pipe)
            else:
                self.tunnel.pool.give(self.pipe)
            self.pipe = None


class SpliceTunnel:
    """Relays two connected sockets, a and b, until both directions ended or one failed.

    Takes ownership of `a` and `b` (duplicates of the caller's sockets: closing them
    leaves the caller's own descriptors open) and closes them when done; `done(result)`
    then says how it ended: ENDED (both ends passed on), RESET_A / RESET_B (that socket
    was set to reset on its last close: the caller closes its own descriptor now), or
    UNSUPPORTED (splice refused these sockets before a byte moved: relay them otherwise).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, a: socket.socket, b: socket.socket,
                 done: Done, pool: PipePool = POOL) -> None:
        self.loop, self.pool = loop, pool
        self._socks = (a, b)
        self._done: Done | None = done
        self._dirs = (_Direction(self, a, b), _Direction(self, b, a))
        self.moved = False  # a byte went through: from now on, no other relay can take over
        self.over = False

    def start(self) -> None:
        for d in self._dirs:
            self.loop.add_reader(d.src.fileno(), d.readable)

    def direction_ended(self) -> None:
        if all(d.ended for d in self._dirs):
            self._end(ENDED)

    def failed(self, d: _Direction, e: OSError, reading: bool) -> None:
        if e.errno in _UNSUPPORTED and not self.moved:
            self._end(UNSUPPORTED)
            return
        if e.errno in _UNSUPPORTED:
            log.warning("splice failed mid-tunnel (%s): passed on as a reset", e)
        # reading: src failed (a reset), so dst gets one; writing: dst is gone, so src does
        other = d.dst if reading else d.src
        _set_reset(other)
        self._end(RESET_B if other is self._socks[1] else RESET_A)

    def wait_for_pipe(self, d: _Direction, e: OSError) -> None:
        log.warning("no pipe for a splice relay (%s): retrying in %.2f s", e, PIPE_RETRY_S)
        self.loop.remove_reader(d.src.fileno())
        d.retry = self.loop.call_later(PIPE_RETRY_S, self._pipe_retry, d)

    def _pipe_retry(self, d: _Direction) -> None:
        d.retry = None
        self.loop.add_reader(d.src.fileno(), d.readable)

    def stop(self) -> None:
        """The caller closes the sockets itself (e.g. the proxy is stopping): let go of
        them without a word."""
        self._done = None
        self._end(ENDED)

    def _end(self, result: str) -> None:
        if self.over:
            return
        self.over = True
        for d in self._dirs:
            d.stop()
        for s in self._socks:
            s.close()
        done, self._done = self._done, None
        if done is not None:
            done(result)


PIPE_RETRY_S = 0.05


def _set_reset(sock: socket.socket) -> None:
    try:  # linger 0: the last close sends RST, as the other side's own reset did
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError as e:
        log.debug("could not set a reset on close: %s", e)
