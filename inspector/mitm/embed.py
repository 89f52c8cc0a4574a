"""Embedding mitmproxy: a plain Master with the inspector addon, in the caller's loop.

Not DumpMaster: it prints to stdout and calls sys.exit on startup errors. Startup
problems that mitmproxy only logs (a port in use) become a `ProxyStartError` with one
clear sentence, so the CLI can exit 2 instead of running without a listener.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket

from mitmproxy import exceptions
from mitmproxy.addons import default_addons
from mitmproxy.addons.tlsconfig import TlsConfig
from mitmproxy.master import Master
from mitmproxy.options import Options

from inspector.chain.judge import upstream_proxy_address
from inspector.mitm import relay
from inspector.observe.loop_guard import is_local_address, loop_reason, numeric_address
from inspector.records.record import host_port

log = logging.getLogger(__name__)

UPSTREAM_RESOLVE_S = 5.0  # a start-up check: a resolver that slow only skips the check


class ProxyStartError(Exception):
    pass


class _ErrorCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class _Running:
    """Signals that mitmproxy finished bringing up its servers."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def running(self) -> None:
        self.event.set()


class Proxy:
    def __init__(self, addons: list, options: dict, intercept: bool = False) -> None:
        self._addons = addons
        self._options = options
        self._intercept = intercept
        self.master: Master | None = None
        self._task: asyncio.Task | None = None

    async def start(self) -> tuple[str, int]:
        """Start listening; returns the real (host, port). Raises ProxyStartError."""
        errors = _ErrorCollector()
        mitm_log = logging.getLogger("mitmproxy")
        mitm_log.addHandler(errors)
        # Its start-up errors become our one sentence; printed as well, they would bury
        # it under mitmproxy's own advice (an option this tool does not have).
        propagate, mitm_log.propagate = mitm_log.propagate, False
        try:
            return await self._start(errors)
        finally:
            mitm_log.removeHandler(errors)
            mitm_log.propagate = propagate

    async def _start(self, errors: _ErrorCollector) -> tuple[str, int]:
        opts = Options()
        try:
            # mitmproxy's own options first: an addon configured with the defaults would
            # see listen_host "" (every interface), which the addon replaces by loopback.
            opts.update(**{k: v for k, v in self._options.items() if k in opts})
        except exceptions.OptionsError as e:
            raise ProxyStartError(str(e).strip("'\"")) from None
        self.master = Master(opts)
        # Our addons first: their next_layer must run before the built-in NextLayer.
        self.master.addons.add(*self._addons)
        builtins = default_addons()
        if not self._intercept:
            # Passthrough never terminates TLS: no CA, no key material in ~/.mitmproxy.
            builtins = [a for a in builtins if not isinstance(a, TlsConfig)]
        self.master.addons.add(*builtins)
        running = _Running()
        self.master.addons.add(running)
        try:
            opts.update(**self._options)
        except (exceptions.OptionsError, KeyError) as e:
            raise ProxyStartError(str(e).strip("'\"")) from None
        self._task = asyncio.create_task(self.master.run())
        done, _ = await asyncio.wait(
            [self._task, asyncio.ensure_future(running.event.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        addrs = self.master.addons.get("proxyserver").listen_addrs()
        if self._task in done or not addrs:
            await self.stop()
            raise ProxyStartError(_listen_failure(self._options.get("listen_host"),
                                                  self._options.get("listen_port"), errors.messages))
        upstream = upstream_proxy_address(self._options.get("mode") or [])
        if upstream is not None and (loop := await _upstream_loop(*upstream, addrs)):
            await self.stop()
            raise ProxyStartError(f"--upstream-proxy {host_port(*upstream)} would send every "
                                  f"tunnel back into this proxy: {loop}")
        host, port = addrs[0][:2]
        return host, port

    async def stop(self) -> None:
        if self.master is None:
            return
        self.master.shutdown()
        if self._task is not None:
            await self._task
        proxyserver = self.master.addons.get("proxyserver")
        # run() returning does not close the listening socket.
        await proxyserver.servers.update([])
        await relay.close_connections(proxyserver)


def _listen_failure(host: str | None, port: int | None, messages: list[str]) -> str:
    """One sentence for a listener that did not start, from mitmproxy's error log."""
    text = " ".join(messages)
    if f"[Errno {errno.EADDRINUSE}]" in text or "address already in use" in text.lower():
        return f"port {port} is in use: pick another with --listen-port"
    # mitmproxy's first line says what failed; the next advises its own options
    first = next((m.splitlines()[0] for m in messages if m.strip()), "")
    return f"cannot listen on {host}:{port}: {first or 'mitmproxy did not start its listener'}"




async def _upstream_loop(host: str, port: int, listening: list) -> str | None:
    """Why the upstream proxy host:port is one of our own listeners, or None. A name is
    resolved here, once: a loop through it would nest a connection per tunnel."""
    if (why := loop_reason(host, port, listening, is_local_address)) is not None \
            or numeric_address(host) is not None:
        return why
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM),
            UPSTREAM_RESOLVE_S)
    except (OSError, asyncio.TimeoutError):
        return None  # unresolvable now: each tunnel then fails upstream-unreachable
    for info in infos:
        if (why := loop_reason(str(info[4][0]), port, listening, is_local_address)) is not None:
            return f"{host} resolves to {info[4][0]}, and {why}"
    return None
