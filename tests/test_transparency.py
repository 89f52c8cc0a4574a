"""The proxy in the path changes nothing a direct connection would show: every byte
arrives, each direction ends on its own (TCP half-close), and a tunnel lives as long
as its peers keep it, observed or not. Real sockets through the real proxy."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import struct
import threading

import pytest

from inspector.lab.http1 import connect_tunnel
from inspector.mitm.relay import HANDOVER_AFTER

from .support import HOST

TIMEOUT = 30.0


class RawServer:
    """A one-connection TCP server on 127.0.0.1 running `script(conn)` in a thread."""

    def __init__(self, script, rcvbuf: int | None = None) -> None:
        self._listener = socket.socket()
        if rcvbuf is not None:  # before listen(): the window offered to the peer follows it
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self._listener.settimeout(TIMEOUT)
        self.port = self._listener.getsockname()[1]
        self.result: dict = {}
        self._script = script
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self._listener.accept()
            conn.settimeout(TIMEOUT)
            with conn:
                self._script(conn, self.result)
        except OSError as e:
            self.result["error"] = repr(e)
        finally:
            self._listener.close()

    def join(self) -> dict:
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the server script did not finish"
        return self.result


# Each relay path once a handshake is decided: splice in the kernel, our asyncio
# protocols, and mitmproxy's layers all the way (--no-fast-relay).
SPLICE, PROTOCOL, LAYERS = ("--relay-pump", "splice"), ("--relay-pump", "protocol"), ("--no-fast-relay",)
RELAYS = pytest.mark.parametrize("relay", [SPLICE, PROTOCOL, LAYERS], ids=["splice", "protocol", "layers"])
# mitmproxy's layers see a reset as an ordinary end of stream: only our relays pass one on
FAST_RELAYS = pytest.mark.parametrize("relay", [SPLICE, PROTOCOL], ids=["splice", "protocol"])


def ping(client: socket.socket) -> None:
    """One round trip first: the first byte decides a tunnel that is not TLS, the ping's
    HANDOVER_AFTER bytes get it handed over, and the reply is read by the relay it was
    handed to, so what follows runs on that relay."""
    client.sendall(bytes(HANDOVER_AFTER))
    assert client.recv(4) == b"pong"


def pong(conn: socket.socket) -> None:
    left = HANDOVER_AFTER
    while left > 0 and (data := conn.recv(left)):
        left -= len(data)
    assert left == 0
    conn.sendall(b"pong")


def read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def sha_to_eof(sock: socket.socket) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    while chunk := sock.recv(1 << 18):
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


@RELAYS
def test_client_half_close_still_gets_the_reply(start_proxy, relay):
    """The client sends its request and shuts its write side; the server answers only
    after it saw that end (as an HTTP/1.0-style or rsh-style server does)."""
    reply = os.urandom(1 << 20)

    def server(conn, out):
        pong(conn)
        out["request"] = read_to_eof(conn)
        out["sent"] = conn.sendall(reply) is None

    srv = RawServer(server)
    p = start_proxy("--no-probe", *relay)
    client = connect_tunnel(p.port, "127.0.0.1", srv.port, timeout=TIMEOUT)
    with client:
        ping(client)
        client.sendall(b"the whole request")
        client.shutdown(socket.SHUT_WR)
        got = read_to_eof(client)
    result = srv.join()
    assert result.get("request") == b"the whole request", result
    assert result.get("sent") is True, result
    assert got == reply, f"{len(got)} of {len(reply)} bytes arrived"


@RELAYS
def test_server_half_close_lets_the_client_keep_sending(start_proxy, relay):
    """The server says its piece and ends its side first; the client's upload that
    follows must still reach it whole."""
    upload = os.urandom(1 << 20)

    def server(conn, out):
        pong(conn)
        conn.sendall(b"greeting, then my side is done")
        conn.shutdown(socket.SHUT_WR)
        out["upload"] = read_to_eof(conn)

    srv = RawServer(server)
    p = start_proxy("--no-probe", *relay)
    client = connect_tunnel(p.port, "127.0.0.1", srv.port, timeout=TIMEOUT)
    with client:
        ping(client)
        greeting = read_to_eof(client)  # the server's FIN arrives as EOF, the tunnel stays
        client.sendall(upload)
        client.shutdown(socket.SHUT_WR)
        assert client.recv(1) == b""
    assert greeting == b"greeting, then my side is done"
    assert srv.join().get("upload") == upload


@RELAYS
def test_100_mib_both_ways_ending_in_half_closes(start_proxy, relay):
    """Both sides stream 100 MiB at once and each ends its own direction; SHA-256 of
    what each side received equals what the other sent."""
    size = 100 << 20
    chunk = os.urandom(1 << 20)
    sent = hashlib.sha256(chunk * (size // len(chunk))).hexdigest()

    def stream(sock):
        for _ in range(size // len(chunk)):
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)

    def server(conn, out):
        t = threading.Thread(target=stream, args=(conn,))
        t.start()
        out["received"] = sha_to_eof(conn)
        t.join(TIMEOUT)

    srv = RawServer(server)
    p = start_proxy("--no-probe", *relay)
    client = connect_tunnel(p.port, "127.0.0.1", srv.port, timeout=TIMEOUT)
    with client:
        t = threading.Thread(target=stream, args=(client,))
        t.start()
        received = sha_to_eof(client)
        t.join(TIMEOUT)
    assert received == (sent, size)
    assert srv.join().get("received") == (sent, size)


def _reset(sock: socket.socket) -> None:
    """Close with linger 0: the peer gets a RST, not a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@FAST_RELAYS
def test_a_server_reset_reaches_the_client_as_a_reset(start_proxy, relay):
    """The server resets the tunnel mid-conversation: the client sees a reset, as it
    would on a direct connection, not an ordinary end of stream."""
    def server(conn, out):
        pong(conn)
        conn.sendall(b"hello")
        out["ack"] = conn.recv(3)
        _reset(conn)

    srv = RawServer(server)
    p = start_proxy("--no-probe", *relay)
    with connect_tunnel(p.port, "127.0.0.1", srv.port, timeout=TIMEOUT) as client:
        ping(client)
        assert client.recv(5) == b"hello"
        client.sendall(b"ack")
        with pytest.raises(ConnectionResetError):
            client.recv(100)
    assert srv.join().get("ack") == b"ack"


@FAST_RELAYS
def test_a_client_reset_reaches_the_server_as_a_reset(start_proxy, relay):
    """The client resets while the server waits for more: the server sees a reset."""
    def server(conn, out):
        pong(conn)
        out["hi"] = conn.recv(2)
        conn.sendall(b"ok")
        try:
            out["then"] = conn.recv(100)
        except ConnectionResetError:
            out["then"] = "reset"

    srv = RawServer(server)
    p = start_proxy("--no-probe", *relay)
    client = connect_tunnel(p.port, "127.0.0.1", srv.port, timeout=TIMEOUT)
    ping(client)
    client.sendall(b"hi")
    assert client.recv(2) == b"ok"
    _reset(client)
    assert srv.join() == {"hi": b"hi", "then": "reset"}


def test_a_client_hello_after_the_handshake_timeout_still_reaches_the_server(
        start_proxy, echo_server, pki):
    """--handshake-timeout ends observation, never the tunnel: a client that waits
    past it before its ClientHello gets a working TLS connection, and the record says
    the handshake was not seen in time."""
    p = start_proxy("--no-probe", "--handshake-timeout", "0.5",
                    "--connect-to", f"{HOST}:443:127.0.0.1:{echo_server.port}")
    raw = connect_tunnel(p.port, HOST, 443, timeout=TIMEOUT)
    (rec,) = p.records(1, timeout=TIMEOUT)  # the timeout record: observation is over
    assert rec["handshake"]["outcome"] == "timeout"
    assert rec["handshake"]["detail"] == "no ClientHello within 0.5 s"
    ctx = ssl.create_default_context(cafile=pki["root_pem"])
    with ctx.wrap_socket(raw, server_hostname=HOST) as tls:
        tls.sendall(b"late but welcome")
        assert tls.recv(100) == b"late but welcome"
    assert len(p.records(1)) == 1  # one tunnel, one record


def test_a_failed_connect_closes_its_connection_so_a_retry_is_a_new_tunnel(start_proxy, echo_server):
    """mitmproxy cannot serve a second CONNECT on a connection whose first one failed (it
    recorded a second tunnel under the same id and crashed): the 502 says `connection:
    close`, the client retries on a new connection, and each tunnel has its own record."""
    from inspector.lab.http1 import read_head

    closed = socket.create_server(("127.0.0.1", 0))
    refused_port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: the proxy answers 502
    p = start_proxy("--no-probe")
    with socket.create_connection(("127.0.0.1", p.port), timeout=TIMEOUT) as s:
        s.sendall(f"CONNECT 127.0.0.1:{refused_port} HTTP/1.1\r\n\r\n".encode())
        head = read_head(s, 8192)
        assert head.startswith(b"HTTP/1.1 502") and b"\r\nconnection: close\r\n" in head
        read_to_eof(s)  # the body, then the proxy's end of the connection
    with connect_tunnel(p.port, "127.0.0.1", echo_server.port, timeout=TIMEOUT):
        pass
    records = p.records(2, timeout=TIMEOUT)
    assert [r["handshake"]["outcome"] for r in records] == ["connect-failed", "closed"]
    assert records[0]["id"] != records[1]["id"]
    code, _, err = p.stop()
    assert code == 0 and "Traceback" not in err, err


def test_sigint_with_open_tunnels_ends_quietly(start_proxy, echo_server):
    """Stopping the proxy ends open tunnels the way a client leaving does: no
    traceback per tunnel, exit 0, every tunnel recorded."""
    import signal

    p = start_proxy("--no-probe")
    idle = [connect_tunnel(p.port, "127.0.0.1", echo_server.port, timeout=TIMEOUT) for _ in range(3)]
    waiting = connect_tunnel(p.port, "127.0.0.1", echo_server.port, timeout=TIMEOUT)
    for s in idle:
        s.sendall(b"plain bytes: decided at once")
    assert len(p.records(3, timeout=TIMEOUT)) == 3
    p.proc.send_signal(signal.SIGINT)
    code, out, err = p.stop()
    assert code == 0, err
    assert "Traceback" not in err and "CancelledError" not in err, err
    records = p.records(4, timeout=TIMEOUT)
    assert len(records) == 4
    assert records[3]["handshake"]["detail"] == "the proxy stopped before the handshake finished"
    for s in [*idle, waiting]:
        s.close()


@pytest.mark.parametrize("fast,pump,size,refused,expected", [
    (True, "splice", 8 << 20, False, {"splice": 1, "protocol": 0}),
    (True, "protocol", 8 << 20, False, {"splice": 0, "protocol": 1}),
    (False, "splice", 8 << 20, False, {"splice": 0, "protocol": 0}),
    (True, "splice", HANDOVER_AFTER // 2, False, {"splice": 0, "protocol": 0}),
    (True, "splice", 8 << 20, True, {"splice": 1, "protocol": 1}),
], ids=["splice", "protocol", "layers", "short", "splice-refused"])
def test_a_decided_tunnel_is_handed_to_the_chosen_relay(fast, pump, size, refused, expected,
                                                        monkeypatch):
    """The proxy in this process, so the test sees which relay carried the bytes: the
    chosen relay takes a tunnel once its handshake is decided and HANDOVER_AFTER bytes
    went by (a short tunnel stays with mitmproxy: the hand-over would cost it more than
    it saves), unless switched off; a spliced tunnel gives its pipes back to the pool.
    Where splice() refuses the sockets (EINVAL: no TCP socket here does, hence the
    stand-in), the protocol relay carries the tunnel instead."""
    import asyncio
    import errno

    from inspector.mitm import splice
    from inspector.mitm.addon import TunnelInspector
    from inspector.mitm.embed import Proxy
    from inspector.mitm.relay import FastRelay, KernelRelay

    payload = os.urandom(size)

    def server(conn, out):
        out["request"] = conn.recv(100)
        conn.sendall(payload)

    async def run() -> tuple[bytes, dict]:
        srv = RawServer(server)
        addon = TunnelInspector()
        proxy = Proxy([addon], {"listen_host": "127.0.0.1", "listen_port": 0,
                                "inspector_probe": False, "inspector_fast_relay": fast,
                                "inspector_relay_pump": pump})
        _, port = await proxy.start()
        before = KernelRelay.handed_over, FastRelay.handed_over

        def client() -> bytes:
            with connect_tunnel(port, "127.0.0.1", srv.port, timeout=TIMEOUT) as c:
                c.sendall(b"not TLS: decided at the first byte")
                return read_to_eof(c)

        try:
            got = await asyncio.wait_for(asyncio.to_thread(client), TIMEOUT)
        finally:
            await proxy.stop()
        srv.join()
        return got, {"splice": KernelRelay.handed_over - before[0],
                     "protocol": FastRelay.handed_over - before[1]}

    if refused:
        def refuse(*_args, **_kwargs):
            raise OSError(errno.EINVAL, "Invalid argument")
        monkeypatch.setattr(splice.os, "splice", refuse)
    made = splice.POOL.made
    got, handed_over = asyncio.run(run())
    assert got == payload
    assert handed_over == expected
    # every pipe taken was given back (none in flight at the end), and few were made
    assert splice.POOL.idle == splice.POOL.made <= made + 2


@pytest.mark.parametrize("pump", ["splice", "protocol"])
def test_stopping_the_proxy_ends_a_handed_over_tunnel(pump):
    """The proxy stops (in this process, which lives on) while a tunnel is with a fast
    relay: both peers see the end at once, as when mitmproxy itself relays, and the
    splice relay lets go of its descriptors and pipes."""
    import asyncio

    from inspector.mitm import splice
    from inspector.mitm.addon import TunnelInspector
    from inspector.mitm.embed import Proxy

    def server(conn, out):
        pong(conn)
        out["after"] = read_to_eof(conn)

    async def run() -> bytes:
        srv = RawServer(server)
        proxy = Proxy([TunnelInspector()], {"listen_host": "127.0.0.1", "listen_port": 0,
                                            "inspector_probe": False, "inspector_relay_pump": pump})
        _, port = await proxy.start()
        client = await asyncio.to_thread(connect_tunnel, port, "127.0.0.1", srv.port, timeout=TIMEOUT)
        try:
            await asyncio.to_thread(ping, client)
            await proxy.stop()
            return await asyncio.wait_for(asyncio.to_thread(client.recv, 1), TIMEOUT)
        finally:
            client.close()
            srv.join()

    assert asyncio.run(run()) == b""
    assert splice.POOL.idle == splice.POOL.made


@pytest.mark.parametrize("pump", ["splice", "protocol"])
def test_a_client_that_stops_reading_stops_the_relay_not_the_cpu(pump):
    """Back-pressure: while the client reads nothing, the relay waits for its socket to
    take bytes (no busy loop: the process stays nearly idle for that second), and when
    the client reads again every byte arrives in order."""
    import asyncio
    import time

    from inspector.mitm.addon import TunnelInspector
    from inspector.mitm.embed import Proxy

    payload = os.urandom(64 << 20)

    def server(conn, out):
        pong(conn)
        conn.sendall(payload)

    def client(port: int, srv_port: int) -> tuple[float, str]:
        with connect_tunnel(port, "127.0.0.1", srv_port, timeout=TIMEOUT) as c:
            ping(c)
            first = c.recv(1 << 16)
            cpu0 = time.process_time()
            threading.Event().wait(1.0)  # a reader that stalls on purpose: no event to await
            spent = time.process_time() - cpu0
            h, got = hashlib.sha256(first), len(first)
            while got < len(payload) and (chunk := c.recv(1 << 20)):
                h.update(chunk)
                got += len(chunk)
            return spent, h.hexdigest()

    async def run() -> tuple[float, str]:
        srv = RawServer(server)
        proxy = Proxy([TunnelInspector()], {"listen_host": "127.0.0.1", "listen_port": 0,
                                            "inspector_probe": False, "inspector_relay_pump": pump})
        _, port = await proxy.start()
        try:
            return await asyncio.wait_for(asyncio.to_thread(client, port, srv.port), TIMEOUT)
        finally:
            await proxy.stop()
            srv.join()

    spent, digest = asyncio.run(run())
    assert digest == hashlib.sha256(payload).hexdigest()
    assert spent < 0.3, f"{spent:.2f} s of CPU in a second when nothing could move"


@pytest.mark.parametrize("pump", ["splice", "protocol"])
def test_a_trickle_to_a_server_that_stops_reading_stops_the_relay_not_the_cpu(pump):
    """Back-pressure by pieces: a client writes 100-byte pieces to a server that has
    stopped reading. Each piece takes a slot of a splice pipe however small it is, so
    the pipe fills by slots long before its bytes: the relay must then wait for the
    server, not spin on a source it cannot read into the pipe. Once the server reads
    again, every piece arrives in order."""
    import asyncio
    import time

    from inspector.mitm.addon import TunnelInspector
    from inspector.mitm.embed import Proxy

    reading = threading.Event()

    def server(conn, out):
        pong(conn)
        reading.wait(TIMEOUT)  # stalled until the client has measured the relay's CPU
        out["digest"] = hashlib.sha256(read_to_eof(conn)).hexdigest()

    def client(port: int, srv_port: int) -> tuple[float, str, int]:
        sent = hashlib.sha256()
        pieces = 0
        with connect_tunnel(port, "127.0.0.1", srv_port, timeout=TIMEOUT) as c:
            ping(c)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.setblocking(False)
            deadline = time.monotonic() + 10
            while pieces < 100_000 and time.monotonic() < deadline:
                piece = struct.pack(">I", pieces) * 25
                try:
                    n = c.send(piece)
                except BlockingIOError:
                    break  # everything between here and the server is full
                sent.update(piece[:n])
                pieces += 1
                if n < len(piece):
                    break
                # a piece each 0.2 ms: separate segments, so separate pipe slots (the
                # trickle is the scenario, not a wait for an event)
                time.sleep(0.0002)
            cpu0 = time.process_time()
            threading.Event().wait(1.0)  # nothing can move for this second
            spent = time.process_time() - cpu0
            reading.set()
            c.setblocking(True)
            c.shutdown(socket.SHUT_WR)
            return spent, sent.hexdigest(), pieces

    async def run():
        srv = RawServer(server, rcvbuf=4096)
        proxy = Proxy([TunnelInspector()], {"listen_host": "127.0.0.1", "listen_port": 0,
                                            "inspector_probe": False, "inspector_relay_pump": pump})
        _, port = await proxy.start()
        try:
            got = await asyncio.wait_for(asyncio.to_thread(client, port, srv.port), TIMEOUT)
            return got, await asyncio.to_thread(srv.join)
        finally:
            await proxy.stop()

    (spent, digest, pieces), result = asyncio.run(run())
    assert pieces > 300, f"only {pieces} pieces: the pipe never filled by slots"
    assert result.get("digest") == digest, result
    assert spent < 0.3, f"{spent:.2f} s of CPU in a second when nothing could move"


def test_a_client_leaving_mid_request_is_closed_not_malformed(start_proxy):
    """A CONNECT head sent in pieces, then the client goes: nothing was malformed, so
    no bad-connect; a malformed head still is one."""
    from inspector.lab.http1 import read_head

    p = start_proxy("--no-probe")
    with socket.create_connection(("127.0.0.1", p.port), timeout=TIMEOUT) as s:
        s.sendall(b"CONNECT a.example:443 HTTP/1.1\r\n")
        s.sendall(b"Host: a.exa")
    (left,) = p.records(1, timeout=TIMEOUT)
    assert left["connect"] == {"host": "a.example", "port": 443}
    assert left["handshake"]["outcome"] == "closed"
    assert left["handshake"]["detail"] == "the client left before its request was complete"
    assert "bad-connect" not in [f["code"] for f in left["findings"]]
    with socket.create_connection(("127.0.0.1", p.port), timeout=TIMEOUT) as s:
        s.sendall(b"CONNECT a.example:99999 HTTP/1.1\r\n")
        s.sendall(b"\r\n")
        assert read_head(s, 8192).startswith(b"HTTP/1.1 400")
    malformed = p.records(2, timeout=TIMEOUT)[1]
    assert malformed["handshake"]["outcome"] == "connect-failed"
    assert [f["code"] for f in malformed["findings"]] == ["bad-connect"]


def test_no_pipe_for_a_splice_relay_is_one_warning_and_retries_until_one_comes(caplog):
    """Out of descriptors, a direction retries for a pipe 20 times a second: one warning
    per tunnel, not one per retry (a flood in the log and the UI); and once a pipe can
    be made again, the bytes go through."""
    import asyncio
    import errno
    import logging

    from inspector.mitm import splice

    class Exhausted(splice.PipePool):
        def __init__(self, refusals: int) -> None:
            super().__init__()
            self.refusals = refusals

        def take(self):
            if self.refusals > 0:  # EMFILE cannot be caused here without starving the test itself
                self.refusals -= 1
                raise OSError(errno.EMFILE, "Too many open files")
            return super().take()

    async def run() -> bytes:
        a, peer_a = socket.socketpair()
        b, peer_b = socket.socketpair()
        for s in (a, b):
            s.setblocking(False)
        ended = asyncio.get_running_loop().create_future()
        pool = Exhausted(refusals=6)
        tunnel = splice.SpliceTunnel(asyncio.get_running_loop(), a, b, ended.set_result, pool)
        tunnel.start()
        peer_a.sendall(b"through at last")
        peer_a.shutdown(socket.SHUT_WR)
        peer_b.shutdown(socket.SHUT_WR)
        try:
            await asyncio.wait_for(ended, TIMEOUT)
            peer_b.settimeout(TIMEOUT)
            return read_to_eof(peer_b)
        finally:
            tunnel.stop()
            peer_a.close()
            peer_b.close()

    with caplog.at_level(logging.DEBUG, logger="inspector.mitm.splice"):
        assert asyncio.run(run()) == b"through at last"
    about_pipes = [r for r in caplog.records if "no pipe for a splice relay" in r.message]
    assert [r.levelno for r in about_pipes] == [logging.WARNING] + [logging.DEBUG] * 5
