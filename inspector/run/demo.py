"""`tunnel-inspector demo`: the chain lab, the proxy, and clients that break things.

Every lab server listens on 127.0.0.1 under a `*.lab.test` name that the proxy maps
with --connect-to, so the clients use names and SNI exactly as a real app would. The
proxy trusts the lab roots (as a normal client of the lab would) and judges each chain
for an old device's root store too (`--client old-device=...`). The scripted clients
reproduce each lab case, both incidents included: a client that sends no SNI to an
SNI-only server, and an old device against a chain with an expired cross-signed root.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path

from inspector.lab.chains import ChainLab, build_chain_lab
from inspector.lab.http1 import connect_tunnel

log = logging.getLogger(__name__)

CLIENT_TIMEOUT = 10.0  # seconds any one socket operation of a scripted client may take


@dataclass(frozen=True)
class Client:
    """One scripted client: a tunnel to `host`, with this SNI and trust."""

    host: str
    sni: str | None  # None: send no SNI
    cafile: Path | None  # None: trust nothing (the client rejects any certificate)
    port: int = 443
    plaintext: bool = False  # speak HTTP inside the tunnel instead of TLS


def scripted_clients(lab: ChainLab) -> list[Client]:
    root, old = lab.root_pem, lab.old_device_pem
    clients = [Client(s.hostname, s.hostname, root) for s in lab.scenarios.values()]
    sni_only = lab.scenarios["sni-only"].hostname
    cross = lab.scenarios["expired-cross-root"].hostname
    return clients + [
        Client(sni_only, None, root),  # incident 2: no SNI through the proxy
        Client(sni_only, f"other.{sni_only}", root),  # SNI that differs from CONNECT
        Client(cross, cross, old),  # incident 1: an old device's own trust store
        Client(lab.scenarios["good"].hostname, lab.scenarios["good"].hostname, None),
        Client(lab.scenarios["good"].hostname, None, root, plaintext=True),
        Client("closed-port.lab.test", "closed-port.lab.test", root, port=1),
    ]


def _one(proxy_port: int, c: Client) -> None:
    """A blocking client, as most apps are: OpenSSL then sends its alerts before closing
    (asyncio's TLS drops them), so a rejection shows as the alert a real app sends."""
    try:
        sock = connect_tunnel(proxy_port, c.host, c.port, CLIENT_TIMEOUT)
    except ConnectionError:
        return  # the proxy could not connect: that is the case being shown
    with sock:
        request = f"GET / HTTP/1.1\r\nHost: {c.host}\r\nConnection: close\r\n\r\n".encode()
        if c.plaintext:
            sock.sendall(request)
            sock.recv(1024)
            return
        ctx = ssl.create_default_context(cafile=str(c.cafile)) if c.cafile else _trust_nothing()
        if c.sni is None:
            ctx.check_hostname = False
        with ctx.wrap_socket(sock, server_hostname=c.sni) as tls:
            tls.sendall(request)
            tls.recv(1024)


def _trust_nothing() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED  # and no CA loaded: every chain is rejected
    return ctx


async def run_clients(proxy_port: int, clients: list[Client]) -> None:
    """Each client once, a few at a time; their failures are the demo's content."""
    gate = asyncio.Semaphore(4)

    async def guarded(c: Client) -> None:
        async with gate:
            try:
                await asyncio.to_thread(_one, proxy_port, c)
            except OSError:  # ssl.SSLError and timeouts included
                pass  # expected: most of these clients are meant to fail

    await asyncio.gather(*(guarded(c) for c in clients))


class DemoLab:
    """The lab servers for the demo's lifetime, and the proxy options that use them."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="tunnel-inspector-demo-")
        self.lab = build_chain_lab(self._tmp.name)
        self.servers = {name: self.lab.start(name) for name in self.lab.scenarios}
        self.clients = scripted_clients(self.lab)

    def proxy_options(self) -> dict:
        mapping = [
            f"{s.hostname}:443:127.0.0.1:{self.servers[name].port}"
            for name, s in self.lab.scenarios.items()
        ]
        return {
            "inspector_connect_to": mapping,
            "inspector_trust": [str(self.lab.root_pem)],
            "inspector_client": [f"old-device={self.lab.old_device_pem}"],
        }

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()
        self._tmp.cleanup()


async def run_demo_headless(args: argparse.Namespace, demo: DemoLab) -> int:
    from inspector.run.headless import run_headless

    return await run_headless(args, demo.proxy_options(),
                              until=lambda port: run_clients(port, demo.clients))


def run_demo(args: argparse.Namespace) -> int:
    demo = DemoLab()
    try:
        if args.headless:
            return asyncio.run(run_demo_headless(args, demo))
        from inspector.run.live import run_live

        return run_live(args, demo.proxy_options(), until=lambda port: run_clients(port, demo.clients),
                        note="  (demo: lab servers on 127.0.0.1, scripted clients)")
    finally:
        demo.close()
