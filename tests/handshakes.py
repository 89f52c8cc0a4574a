"""Real TLS handshakes in memory: OpenSSL (through Python's ssl) on both ends, no
sockets, so the pure parsers are tested on the exact bytes a client and server send."""

from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass, field

from inspector.lab.pki import Issued


@dataclass
class Transcript:
    # (from_client, bytes) in the order they were sent
    chunks: list[tuple[bool, bytes]] = field(default_factory=list)
    client_error: str | None = None
    server_error: str | None = None


def _load(ctx: ssl.SSLContext, leaf: Issued, chain=()) -> None:
    with tempfile.NamedTemporaryFile() as c, tempfile.NamedTemporaryFile() as k:
        c.write(leaf.pem + b"".join(x.pem for x in chain))
        c.flush()
        k.write(leaf.key_pem)
        k.flush()
        ctx.load_cert_chain(c.name, k.name)


def server_context(leaf: Issued, chain: list[Issued] = (), *, sni_names=None,
                   max_version=None, client_ca: Issued | None = None,
                   client_cert: ssl.VerifyMode = ssl.CERT_REQUIRED) -> ssl.SSLContext:
    """client_ca: ask for a client certificate issued by it (required or optional)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    if max_version:
        ctx.maximum_version = max_version
    _load(ctx, leaf, chain)
    if client_ca is not None:
        ctx.load_verify_locations(cadata=client_ca.pem.decode())
        ctx.verify_mode = client_cert
    if sni_names is not None:
        def cb(sslobj, name, _ctx):
            return None if name in sni_names else ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        ctx.sni_callback = cb
    return ctx


def client_context(root: Issued | None, *, max_version=None, alpn=None,
                   cert: Issued | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cert is not None:
        _load(ctx, cert)
    if root is not None:
        ctx.load_verify_locations(cadata=root.pem.decode())
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED  # with no CA loaded: the client rejects any cert
    if max_version:
        ctx.maximum_version = max_version
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext,
              sni: str | None, max_rounds: int = 20) -> Transcript:
    """Run a handshake between two memory BIOs and record every byte each side sent."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=sni)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    t = Transcript()
    c_done = s_done = False
    for _ in range(max_rounds):
        if not c_done and t.client_error is None:
            c_done, t.client_error = _step(client)
        _pass(c_out, s_in, True, t)
        if not s_done and t.server_error is None:
            s_done, t.server_error = _step(server)
        _pass(s_out, c_in, False, t)
        if (c_done and s_done) or t.client_error or t.server_error:
            # let the failing side's alert, if any, be flushed
            for bio, frm in ((c_out, True), (s_out, False)):
                if data := bio.read():
                    t.chunks.append((frm, data))
            if c_done and s_done:
                # the TLS 1.3 client's Finished reaches the server; the server may answer
                # with session tickets once it reads application data
                try:
                    server.read(1)
                except ssl.SSLError:
                    pass
                if data := s_out.read():
                    t.chunks.append((False, data))
            break
    return t


def _step(side: ssl.SSLObject) -> tuple[bool, str | None]:
    """One handshake step: (done, the side's error if it failed)."""
    try:
        side.do_handshake()
        return True, None
    except ssl.SSLWantReadError:
        return False, None
    except ssl.SSLError as e:
        return False, e.reason or str(e)


def _pass(out: ssl.MemoryBIO, into: ssl.MemoryBIO, from_client: bool, t: Transcript) -> None:
    """Move what one side wrote to the other, recording it."""
    if data := out.read():
        t.chunks.append((from_client, data))
        into.write(data)
