"""A kernel relay for two connected stream sockets: splice() through pooled pipes (Linux).

Pure sockets and an asyncio loop's add_reader/add_writer: no mitmproxy here (relay.py
hands a decided tunnel's sockets to `SpliceTunnel` and takes them back at the end).

Each direction moves bytes source socket -> pipe -> destination socket without copying
them to userland. A direction holds a pipe only while bytes are in flight: it takes one
from the pool when its source becomes readable and gives it back once the pipe is empty,
so an idle tunnel holds none. It reads only while the pipe has room (back-pressure: a
destination that does not take the bytes stops the reading of its source, the kernel's
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
BURST = 4  # reads one direction makes per readiness callback before others get a turn
# splice() refuses this pair of files: nothing moved, so the caller may relay otherwise
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}

ENDED, RESET_A, RESET_B, UNSUPPORTED = "ended", "reset a", "reset b", "unsupported"
Done = Callable[[str], None]


class PipePool:
    """Idle pipes kept for reuse, at most `keep`; more are made while more directions
    are active at once (a hard bound could stall a tunnel behind another's slow reader)
    and closed when given back to a full pool. A pipe is given back only empty.
    A pipe is (read end, write end, capacity in bytes)."""

    def __init__(self, keep: int = 16) -> None:
        self.keep = keep
        self._idle: list[tuple[int, int, int]] = []
        self.made = 0  # pipes ever made, for tests and benchmarks

    def take(self) -> tuple[int, int, int]:
        if self._idle:
            return self._idle.pop()
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            size = fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        except OSError as e:  # over the user's pipe budget: the default size works, slower
            log.debug("pipe kept at its default size: %s", e)
            size = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
        self.made += 1
        return r, w, size

    def give(self, pipe: tuple[int, int, int]) -> None:
        if len(self._idle) < self.keep:
            self._idle.append(pipe)
        else:
            self.discard(pipe)

    @staticmethod
    def discard(pipe: tuple[int, int, int]) -> None:
        """A pipe that may still hold bytes (its tunnel was reset): never reused."""
        os.close(pipe[0])
        os.close(pipe[1])

    @property
    def idle(self) -> int:
        return len(self._idle)


POOL = PipePool()


class _Direction:
    """One way of a tunnel: src -> pipe -> dst. The source is read while the pipe has
    room and the pipe written out while it holds bytes, both at once: the pipe is the
    only buffer, so what is read never exceeds what dst can be sent plus its capacity."""

    def __init__(self, tunnel: SpliceTunnel, src: socket.socket, dst: socket.socket) -> None:
        self.tunnel = tunnel
        self.src, self.dst = src, dst
        self.src_fd, self.dst_fd = src.fileno(), dst.fileno()
        self.pipe: tuple[int, int, int] | None = None  # held while bytes are in it
        self.pending = 0  # bytes in the pipe, not yet written to dst
        self.reading = False  # src is watched for readability
        self.writing = False  # dst is watched for writability (it refused bytes)
        self.eof = False  # src sent its end; passed on once the pipe is empty
        self.ended = False  # ... and passed on: dst's write side is shut down
        self.retry: asyncio.TimerHandle | None = None  # waiting for a pipe (no descriptors)

    def watch_src(self, on: bool) -> None:
        if on != self.reading:
            self.reading = on
            if on:
                self.tunnel.loop.add_reader(self.src_fd, self.readable)
            else:
                self.tunnel.loop.remove_reader(self.src_fd)

    def watch_dst(self, on: bool) -> None:
        if on != self.writing:
            self.writing = on
            if on:
                self.tunnel.loop.add_writer(self.dst_fd, self.writable)
            else:
                self.tunnel.loop.remove_writer(self.dst_fd)

    def readable(self) -> None:
        if self.pipe is None:
            try:
                self.pipe = self.tunnel.pool.take()
            except OSError as e:  # out of file descriptors: try again shortly
                self.tunnel.wait_for_pipe(self, e)
                return
        for _ in range(BURST):
            room = self.pipe[2] - self.pending
            if room <= 0:
                self.watch_src(False)  # back-pressure: dst's writability resumes reading
                return
            try:
                n = os.splice(self.src_fd, self.pipe[1], room, flags=_FLAGS)
            except BlockingIOError:
                if self.pending and self.writing:
                    # The pipe may be full by slots, not bytes (each splice takes one, however
                    # few bytes it moves: 100-byte pieces fill a 1 MiB pipe at 25 KB) while
                    # the source still holds bytes: watching it would spin. dst's
                    # writability drains the pipe and resumes reading (_settle).
                    self.watch_src(False)
                    return
                break
            except OSError as e:
                self.tunnel.failed(self, e, reading=True)
                return
            if n == 0:
                self.eof = True
                self.watch_src(False)
                break
            self.tunnel.moved = True
            self.pending += n
            if not self.writing and not self.flush():
                return
        self._settle()

    def flush(self) -> bool:
        """Write out what dst takes now; False if the tunnel failed."""
        assert self.pipe is not None
        while self.pending:
            try:
                n = os.splice(self.pipe[0], self.dst_fd, self.pending, flags=_FLAGS)
            except BlockingIOError:
                n = 0
            except OSError as e:
                self.tunnel.failed(self, e, reading=False)
                return False
            if n == 0:
                self.watch_dst(True)
                return True
            self.pending -= n
        self.watch_dst(False)
        return True

    def writable(self) -> None:
        if self.flush():
            self._settle()

    def _settle(self) -> None:
        """After a step: read on if the pipe has room; pass on an end once it is empty;
        give an empty pipe back."""
        if self.pending or self.pipe is None:
            if self.pipe is not None and not self.eof and self.pending < self.pipe[2]:
                self.watch_src(True)
            return
        self.tunnel.pool.give(self.pipe)
        self.pipe = None
        if self.eof:
            self._ended()
        else:
            self.watch_src(True)

    def _ended(self) -> None:
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
        self.watch_src(False)
        self.watch_dst(False)
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
        self.waited_for_pipe = False  # the warning that no pipe could be made was given
        self.over = False

    def start(self) -> None:
        for d in self._dirs:
            d.watch_src(True)

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
        # once per tunnel: out of descriptors, each direction retries 20 times a second
        (log.debug if self.waited_for_pipe else log.warning)(
            "no pipe for a splice relay (%s): retrying every %.2f s", e, PIPE_RETRY_S)
        self.waited_for_pipe = True
        d.watch_src(False)
        d.retry = self.loop.call_later(PIPE_RETRY_S, self._pipe_retry, d)

    def _pipe_retry(self, d: _Direction) -> None:
        d.retry = None
        d.watch_src(True)

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
