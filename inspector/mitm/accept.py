"""Accepting connections while the process is out of file descriptors.

asyncio's selector loop (CPython 3.11 to 3.13) answers EMFILE from accept() by logging a
traceback, pausing the listener and scheduling a retry one second later, and then goes
on with the rest of its accept batch (100 tries): one readiness event makes 100
tracebacks and 100 retries, and each retry makes 100 more (python/cpython#151615;
measured here: 64% CPU and 1.1 MB/s of tracebacks). `install(loop)` gives the loop the
same accept step with the batch ended at the first resource error, a retry every
RETRY_S until a descriptor is free, and one warning line instead of the tracebacks.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import resource
import time
from asyncio import selector_events
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast

log = logging.getLogger(__name__)

RETRY_S = 0.1  # a retry is one failing accept(): cheap, and service resumes this soon
WARN_EVERY_S = 60.0  # at most one warning line per minute, however often it recurs

_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# The private method replaced, as CPython 3.11-3.13 define it; any other shape is left alone.
_SIGNATURE = ["protocol_factory", "sock", "sslcontext", "server", "backlog",
              "ssl_handshake_timeout", "ssl_shutdown_timeout"]


class _Private(Protocol):
    """The private parts of CPython's selector loop used here (typeshed has none of them);
    install() checks the accept step's signature before relying on them."""

    _accept_connection: Callable[..., None]

    def _remove_reader(self, fd: int) -> bool: ...

    def _accept_connection2(self, *args: Any) -> Coroutine[Any, Any, None]: ...

    def _start_serving(self, *args: Any) -> None: ...


class _Acceptor:
    """BaseSelectorEventLoop._accept_connection, ending its batch at a resource error."""

    def __init__(self, loop: selector_events.BaseSelectorEventLoop) -> None:
        self._loop = loop
        self._private = cast(_Private, loop)  # the same loop, seen through its private API
        self._short_since: float | None = None  # when accept() last started failing
        self._warned = -WARN_EVERY_S

    def __call__(self, protocol_factory, sock, sslcontext=None, server=None, backlog=100,
                 *timeouts) -> None:
        loop = self._loop
        for _ in range(backlog):
            try:
                conn, addr = sock.accept()
                conn.setblocking(False)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # the accept queue is empty
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRNOS:
                    raise  # the loop logs it, as it always did
                self._short(exc)
                # Linux keeps the listener readable while accept() fails: stop watching
                # it, or the loop spins; the connection waits in the kernel's queue.
                self._private._remove_reader(sock.fileno())
                loop.call_later(RETRY_S, self._resume,
                                (protocol_factory, sock, sslcontext, server, backlog, *timeouts))
                return
            if self._short_since is not None:
                log.info("accepting connections again after %.1f s without file descriptors",
                         time.monotonic() - self._short_since)
                self._short_since = None
            loop.create_task(self._private._accept_connection2(
                protocol_factory, conn, {"peername": addr}, sslcontext, server, *timeouts))

    def _resume(self, args: tuple) -> None:
        sock, server = args[1], args[3]
        if sock.fileno() == -1 or (server is not None and not server.is_serving()):
            return  # the server was closed meanwhile
        self._private._start_serving(*args)

    def _short(self, exc: OSError) -> None:
        now = time.monotonic()
        if self._short_since is not None:
            return
        self._short_since = now
        if now - self._warned >= WARN_EVERY_S:
            self._warned = now
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            log.warning("cannot accept connections: %s (open-file limit %d); they wait in the "
                        "listen queue until descriptors are free", exc.strerror, soft)


def install(loop: asyncio.AbstractEventLoop) -> bool:
    """Use the bounded accept step on `loop` (before it listens); False if not applicable."""
    if isinstance(getattr(loop, "_accept_connection", None), _Acceptor):
        return True
    if not isinstance(loop, selector_events.BaseSelectorEventLoop):
        log.debug("not a selector event loop: accept errors are left to %r", loop)
        return False
    private = cast(_Private, loop)
    params = list(inspect.signature(private._accept_connection).parameters)
    if params != _SIGNATURE:
        log.debug("asyncio's accept step changed (%s): left alone", params)
        return False
    private._accept_connection = _Acceptor(loop)
    return True
