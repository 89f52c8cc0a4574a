"""Real TLS servers on 127.0.0.1 for the lab, one thread per connection.

Each server serves a fixed chain in the order given (OpenSSL sends the extra
certificates exactly as loaded), optionally refuses a missing or unknown SNI with an
`unrecognized_name` alert, and answers one HTTP request (or echoes, for byte tests).
"""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterable

from cryptography.hazmat.primitives import serialization

from inspector.lab.http1 import read_head

ACCEPT_POLL = 0.2  # seconds; how quickly stop() is noticed
CONN_TIMEOUT = 10.0  # a stuck client cannot pin a thread for longer
LINGER = 1.0  # seconds a refused client's remaining bytes are read for


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class TLSServer:
    """A TLS server serving `chain` (leaf first, then the rest as served) for `key`.

    sni_names: when set, a ClientHello without SNI or with another name is refused
    with the unrecognized_name alert, as SNI-only virtual hosts do.
    mode: "http" answers one request with 200; "echo" echoes bytes until EOF;
    "stall" accepts TCP and never answers (a server stuck mid-handshake).
    """

    def __init__(
        self,
        chain: list,
        key,
        *,
        sni_names: Iterable[str] | None = None,
        mode: str = "http",
        max_version: ssl.TLSVersion | None = None,
        host: str = "127.0.0.1",
        curve: str | None = None,
        client_ca: bytes | None = None,
    ) -> None:
        self.mode = mode
        self.sni_names = {n.lower() for n in sni_names} if sni_names is not None else None
        self.sni_seen: list[str | None] = []  # what clients sent, for tests
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if max_version is not None:
            self._ctx.maximum_version = max_version
        if client_ca is not None:  # mutual TLS: a client certificate from this CA (PEM)
            self._ctx.load_verify_locations(cadata=client_ca.decode())
            self._ctx.verify_mode = ssl.CERT_REQUIRED
        if curve is not None:
            # The only group: a TLS 1.3 client whose key share is another (OpenSSL and
            # curl send X25519) gets a HelloRetryRequest, as from many real servers.
            self._ctx.set_ecdh_curve(curve)
        with tempfile.TemporaryDirectory() as d:
            cert_path, key_path = os.path.join(d, "chain.pem"), os.path.join(d, "key.pem")
            with open(cert_path, "wb") as f:
                f.write(b"".join(_pem(c) for c in chain))
            with open(key_path, "wb") as f:
                f.write(
                    key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    )
                )
            self._ctx.load_cert_chain(cert_path, key_path)
        self._ctx.sni_callback = self._sni
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, 0), family=family)
        self._sock.settimeout(ACCEPT_POLL)
        self.port: int = self._sock.getsockname()[1]
        self.host = host
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"lab-tls-{self.port}", daemon=True)

    def _sni(self, sslobj, name, ctx):
        self.sni_seen.append(name)
        if self.sni_names is not None and (name is None or name.lower() not in self.sni_names):
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        return None

    def start(self) -> TLSServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def __enter__(self) -> TLSServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(CONN_TIMEOUT)
        spare = conn.dup()  # the TLS socket takes `conn`; this one closes after it, gently
        try:
            if self.mode == "stall":
                self._stop.wait(CONN_TIMEOUT)
                return
            with self._ctx.wrap_socket(conn, server_side=True) as tls:
                if self.mode == "echo":
                    while data := tls.recv(65536):
                        tls.sendall(data)
                else:
                    self._http(tls)
        except ssl.SSLError:
            _lingering_close(spare)  # the clients in the lab fail on purpose: the data
        except OSError:
            pass
        finally:
            conn.close()
            spare.close()

    @staticmethod
    def _http(tls: ssl.SSLSocket) -> None:
        if not read_head(tls).endswith(b"\r\n\r\n"):
            return  # the client left before finishing its request
        body = b"ok\n"
        tls.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n%s" % (len(body), body)
        )


def _lingering_close(sock: socket.socket) -> None:
    """Close after a refused handshake the way nginx does: FIN first, then read what the
    client had already sent (a TLS 1.3 client's request follows its Finished). Closing
    with unread bytes sends a reset, and a reset can destroy the alert before the client
    reads it: the client would see "connection reset", not why."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(LINGER)
        for _ in range(64):
            if not sock.recv(65536):
                return
    except OSError:
        pass
