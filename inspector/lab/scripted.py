"""Raw TCP servers for the corners a real TLS server will not produce on demand: a
served chain in clear without the keys behind it, or a record of what clients send.

One accept loop for all of them, on 127.0.0.1, in a thread: each connection is handed
to `handle(conn)` in turn (with a 5 s timeout on it), until `close()`.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class ScriptedServer:
    def __init__(self, handle: Callable[[socket.socket], None]) -> None:
        self._handle = handle
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)  # how soon close() is noticed
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self._handle(conn)
                except OSError:
                    pass  # the peer left: the next connection is the script's business

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _message(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + len(body).to_bytes(3, "big") + body


def tls12_flight(ders: list[bytes]) -> bytes:
    """ServerHello + Certificate(ders) + ServerHelloDone in TLS 1.2 records, in clear."""
    certs = b"".join(len(d).to_bytes(3, "big") + d for d in ders)
    hello = b"\x03\x03" + b"\x42" * 32 + b"\x00" + b"\xc0\x2f" + b"\x00"
    flight = (_message(2, hello) + _message(11, len(certs).to_bytes(3, "big") + certs)
              + _message(14, b""))
    return b"".join(
        b"\x16\x03\x03" + len(flight[i:i + 16384]).to_bytes(2, "big") + flight[i:i + 16384]
        for i in range(0, len(flight), 16384)
    )


class FlightServer(ScriptedServer):
    """Answers each ClientHello with `tls12_flight(ders)`, then waits for the client to
    leave: enough for the relay to see a served chain; no key exchange ever happens."""

    def __init__(self, ders: list[bytes]) -> None:
        self.flight = tls12_flight(ders)
        super().__init__(self._answer)

    def _answer(self, conn: socket.socket) -> None:
        conn.recv(65536)  # the ClientHello
        conn.sendall(self.flight)
        conn.recv(65536)  # the client's reaction, or EOF
