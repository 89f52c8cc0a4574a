"""The probe: our own TLS handshake to a tunnel's upstream, to read the served chain.

Needed where the chain cannot be read from the relayed bytes (TLS 1.3 encrypts the
server's Certificate) and to test a server with another SNI. It sends exactly the
SNI bytes it is given (none if None), or, where OpenSSL cannot send them (a NUL byte,
an empty name, over 255 bytes), no handshake at all and an error that says so. It
verifies nothing (judging is verify.py's job), and
reads the handshake's end with the same HandshakeTracker the relay uses, so a probe's
outcome and a tunnel's outcome mean the same thing.

TLS runs in pyOpenSSL memory BIOs (Python's ssl cannot hand out the unverified served
chain before 3.13); the socket I/O is asyncio.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from OpenSSL import SSL, crypto

from inspector.observe.handshake import AlertSeen, HandshakeTracker, Outcome, connect_error_text

READ_SIZE = 65536
MAX_ROUNDS = 64  # a handshake is a handful of flights; this bounds a chatty peer
MAX_SNI = 255  # OpenSSL's limit for a server name it sends (it drops longer ones silently)


@dataclass(frozen=True)
class ProbeResult:
    sni: bytes | None
    chain: list[bytes] | None = None  # DER, as served
    outcome: Outcome | None = None  # None when it never got there
    version: str | None = None
    alert: AlertSeen | None = None
    error: str | None = None  # connect, proxy, timeout: why there is no handshake

    @property
    def ok(self) -> bool:
        return self.outcome == "established"


def _context() -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_verify(SSL.VERIFY_NONE)
    # See what weak servers serve too: every version and cipher OpenSSL still has.
    ctx.set_min_proto_version(SSL.TLS1_VERSION)
    ctx.set_cipher_list(b"ALL:@SECLEVEL=0")
    return ctx


async def probe(
    host: str,
    port: int,
    sni: bytes | None,
    *,
    timeout: float,
    upstream_proxy: tuple[str, int] | None = None,
    connect_name: tuple[str, int] | None = None,
) -> ProbeResult:
    """Handshake with host:port (through an HTTP proxy's CONNECT when given)."""
    refused = unsendable_sni(sni)
    if refused is not None:
        return ProbeResult(sni, error=f"the probe cannot send this SNI: {refused}")
    try:
        return await asyncio.wait_for(
            _probe(host, port, sni, upstream_proxy, connect_name or (host, port)), timeout
        )
    except asyncio.TimeoutError:
        return ProbeResult(sni, error=f"no complete handshake within {timeout:g} s")
    except OSError as e:
        return ProbeResult(sni, error=connect_error_text(str(e)))
    except _ProxyRefused as e:
        return ProbeResult(sni, error=str(e))


def unsendable_sni(sni: bytes | None) -> str | None:
    """Why OpenSSL cannot put these SNI bytes in a ClientHello, or None if it can."""
    if sni is None:
        return None
    if b"\0" in sni:
        return "OpenSSL refuses a NUL byte in a server name"
    if not 1 <= len(sni) <= MAX_SNI:
        return f"OpenSSL sends server names of 1 to {MAX_SNI} bytes, this one has {len(sni)}"
    return None


class _ProxyRefused(Exception):
    pass


async def _open(host, port, upstream_proxy, connect_name):
    if upstream_proxy is None:
        return await asyncio.open_connection(host, port)
    reader, writer = await asyncio.open_connection(*upstream_proxy)
    target = f"{connect_name[0]}:{connect_name[1]}"
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = head.split(b" ", 2)[1:2]
    if status != [b"200"]:
        writer.close()
        first_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        raise _ProxyRefused(f"upstream proxy answered {first_line!r}")
    return reader, writer


async def _probe(host, port, sni, upstream_proxy, connect_name) -> ProbeResult:
    reader, writer = await _open(host, port, upstream_proxy, connect_name)
    conn = SSL.Connection(_context(), None)
    conn.set_connect_state()
    if sni is not None:
        conn.set_tlsext_host_name(sni)
    tracker = HandshakeTracker()
    try:
        for _ in range(MAX_ROUNDS):
            finished, error = _step(conn)
            out = _drain(conn)
            if out:
                tracker.feed(True, out)
                writer.write(out)
                await writer.drain()
            if finished or tracker.decided:
                if error and not tracker.decided:
                    tracker.end("closed", f"the probe's TLS library gave up: {error}")
                elif not tracker.decided:
                    # TLS 1.3: the probe has the chain and leaves before the server's answer
                    tracker.side_closed(True)
                    tracker.closed()
                break
            data = await reader.read(READ_SIZE)
            if not data:
                tracker.side_closed(False)
                tracker.closed()
                break
            tracker.feed(False, data)
            conn.bio_write(data)
        else:
            tracker.end("closed", "the handshake did not finish within its flight limit")
        peer = conn.get_peer_cert_chain()
    finally:
        writer.close()
    chain = [crypto.dump_certificate(crypto.FILETYPE_ASN1, c) for c in peer] if peer else None
    return ProbeResult(sni, chain, tracker.outcome, tracker.version, tracker.alert)


def _step(conn: SSL.Connection) -> tuple[bool, str | None]:
    """Advance the handshake: (over, OpenSSL's error if it failed on our side).

    A peer's alert or close is in the bytes the tracker has already read; the error
    text only matters when the tracker saw nothing decisive."""
    try:
        conn.do_handshake()
        return True, None
    except SSL.WantReadError:
        return False, None
    except SSL.Error as e:
        return True, str(e)


def _drain(conn: SSL.Connection) -> bytes:
    out = b""
    while True:
        try:
            out += conn.bio_read(READ_SIZE)
        except SSL.WantReadError:
            return out
