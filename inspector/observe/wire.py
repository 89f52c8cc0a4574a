"""TLS wire format: records and the few handshake messages the inspector reads.

Pure parsing, bytes in and plain values out. Nothing here trusts a length field:
every read is bounds-checked and a short or malformed message raises `WireError`.
Only cleartext parts of the handshake are read: ClientHello, ServerHello, alerts,
ChangeCipherSpec and, in TLS <= 1.2, the server's Certificate message.
"""

from __future__ import annotations

from dataclasses import dataclass

# Record content types (RFC 8446 section 5.1).
CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23

# Handshake message types.
CLIENT_HELLO = 1
SERVER_HELLO = 2
CERTIFICATE = 11
CERTIFICATE_REQUEST = 13

# Extensions.
EXT_SERVER_NAME = 0
EXT_SUPPORTED_GROUPS = 10
EXT_SIGNATURE_ALGORITHMS = 13
EXT_ALPN = 16
EXT_SUPPORTED_VERSIONS = 43
EXT_ECH = 0xFE0D  # encrypted_client_hello (RFC 9849): real ECH and its GREASE look alike

RECORD_HEADER = 5
MAX_RECORD_PAYLOAD = 16384 + 2048  # TLSCiphertext may exceed 2^14 by up to 2048

# SHA-256("HelloRetryRequest"): a ServerHello with this random is a HelloRetryRequest.
HRR_RANDOM = bytes.fromhex(
    "cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c"
)

VERSION_NAMES = {
    0x0300: "SSLv3",
    0x0301: "TLSv1",
    0x0302: "TLSv1.1",
    0x0303: "TLSv1.2",
    0x0304: "TLSv1.3",
}

ALERT_NAMES = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    21: "decryption_failed",
    22: "record_overflow",
    30: "decompression_failure",
    40: "handshake_failure",
    41: "no_certificate",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    60: "export_restriction",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    100: "no_renegotiation",
    109: "missing_extension",
    110: "unsupported_extension",
    111: "certificate_unobtainable",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    114: "bad_certificate_hash_value",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}


class WireError(ValueError):
    """The bytes are not the TLS structure they claim to be."""


def version_name(code: int) -> str:
    return VERSION_NAMES.get(code, f"0x{code:04x}")


def alert_name(code: int) -> str:
    return ALERT_NAMES.get(code, f"alert_{code}")


def is_grease(value: int) -> bool:
    # RFC 8701 reserves 0x?A?A values; clients send them to keep servers honest.
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


@dataclass(frozen=True)
class Record:
    type: int
    version: int
    payload: bytes  # empty when read by a headers-only reader
    length: int = -1  # the payload's length on the wire

    @property
    def size(self) -> int:
        return self.length if self.length >= 0 else len(self.payload)


def looks_like_tls(prefix: bytes, from_client: bool = True) -> bool:
    """Whether the first bytes of a stream can start TLS: a client opens with a
    handshake record; a server may also open with an alert (refusing the hello)."""
    if not prefix:
        return True
    if prefix[0] != HANDSHAKE and (from_client or prefix[0] != ALERT):
        return False
    if len(prefix) >= 2 and prefix[1] != 0x03:
        return False
    return not (len(prefix) >= 3 and prefix[2] > 0x04)


class RecordReader:
    """Reassembles TLS records from an arbitrarily split byte stream.

    After keep_headers_only(), payloads are counted past, not kept (Record.size tells
    their length): for watching what follows a handshake, where only a record's type
    and size matter, so a partial 16 KiB record costs nothing while the tunnel waits.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._headers_only = False
        self._skip = 0  # payload bytes of the last record still to pass (headers_only)
        self._ready: list[Record] = []  # a partial record's header, read when switching

    def keep_headers_only(self) -> None:
        """From now on count payloads past instead of keeping them. A record already
        begun is reported by its header at the next feed."""
        if len(self._buf) >= RECORD_HEADER:
            rtype, version = self._buf[0], int.from_bytes(self._buf[1:3], "big")
            length = int.from_bytes(self._buf[3:5], "big")
            self._ready.append(Record(rtype, version, b"", length))
            self._skip = max(0, length - (len(self._buf) - RECORD_HEADER))
            self._buf.clear()
        self._headers_only = True

    def feed(self, data: bytes) -> list[Record]:
        if self._headers_only:
            ready, self._ready = self._ready, []
            return ready + self._feed_headers(data)
        self._buf += data
        records = []
        while len(self._buf) >= RECORD_HEADER:
            rtype = self._buf[0]
            version = int.from_bytes(self._buf[1:3], "big")
            length = int.from_bytes(self._buf[3:5], "big")
            if rtype not in (CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA):
                raise WireError(f"record type {rtype} is not a TLS content type")
            if version >> 8 != 0x03:
                raise WireError(f"record version 0x{version:04x} is not TLS")
            if length > MAX_RECORD_PAYLOAD:
                raise WireError(f"record length {length} exceeds the TLS maximum")
            if len(self._buf) < RECORD_HEADER + length:
                break
            payload = bytes(self._buf[RECORD_HEADER : RECORD_HEADER + length])
            del self._buf[: RECORD_HEADER + length]
            records.append(Record(rtype, version, payload))
        return records

    def _feed_headers(self, data: bytes) -> list[Record]:
        records = []
        pos = 0
        while pos < len(data):
            if self._skip:
                step = min(self._skip, len(data) - pos)
                self._skip -= step
                pos += step
                continue
            need = RECORD_HEADER - len(self._buf)
            self._buf += data[pos : pos + need]
            pos += min(need, len(data) - pos)
            if len(self._buf) < RECORD_HEADER:
                break
            rtype, version = self._buf[0], int.from_bytes(self._buf[1:3], "big")
            length = int.from_bytes(self._buf[3:5], "big")
            self._buf.clear()
            if rtype not in (CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA) or version >> 8 != 0x03:
                raise WireError(f"record type {rtype}, version 0x{version:04x} is not TLS")
            records.append(Record(rtype, version, b"", length))
            self._skip = length
        return records

    @property
    def pending(self) -> int:
        return len(self._buf)


class HandshakeReader:
    """Reassembles handshake messages that span or share records.

    A message longer than `limit` is legal (up to 2^24 bytes: a Certificate message
    with a long chain) but is not buffered: it is passed over as it streams by and
    reported as (type, None), so memory per tunnel stays bounded whatever a peer sends.
    """

    def __init__(self, limit: int) -> None:
        self._buf = bytearray()
        self._limit = limit
        self._skipping = 0  # bytes left of an oversized message being passed over
        self.skipped: list[tuple[int, int]] = []  # (type, length) of each passed over

    def feed(self, payload: bytes) -> list[tuple[int, bytes | None]]:
        if self._skipping:
            n = min(self._skipping, len(payload))
            self._skipping -= n
            payload = payload[n:]
        self._buf += payload
        messages: list[tuple[int, bytes | None]] = []
        while len(self._buf) >= 4:
            length = int.from_bytes(self._buf[1:4], "big")
            if length > self._limit:
                msg_type = self._buf[0]
                self.skipped.append((msg_type, length))
                messages.append((msg_type, None))
                held = len(self._buf) - 4
                self._skipping = max(0, length - held)
                del self._buf[: 4 + min(length, held)]
                continue
            if len(self._buf) < 4 + length:
                break
            messages.append((self._buf[0], bytes(self._buf[4 : 4 + length])))
            del self._buf[: 4 + length]
        return messages


class _Cursor:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise WireError(f"{self.what} is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.uint(length_bytes))

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos


def _extensions(cur: _Cursor) -> list[tuple[int, bytes]]:
    if cur.remaining == 0:
        return []  # extensions are optional before TLS 1.3
    block = _Cursor(cur.vector(2), cur.what + " extensions")
    exts = []
    while block.remaining:
        ext_type = block.uint(2)
        exts.append((ext_type, block.vector(2)))
    return exts


@dataclass(frozen=True)
class ClientHello:
    legacy_version: int
    # The raw server_name bytes; None when the extension is absent. An extension that
    # is present but empty, or carries a non-hostname, is kept so it can be reported.
    sni_raw: bytes | None
    sni_present: bool
    alpn: tuple[str, ...] = ()
    versions: tuple[int, ...] = ()
    # What identifies the client's TLS stack (JA4, observe/stacks.py), in the order
    # sent, GREASE values included: the features are in which values and where.
    cipher_suites: tuple[int, ...] = ()
    extensions: tuple[int, ...] = ()
    signature_algorithms: tuple[int, ...] = ()
    supported_groups: tuple[int, ...] = ()
    alpn_raw: tuple[bytes, ...] = ()  # ALPN as sent; `alpn` is its display text
    session_id_length: int = 0

    @property
    def offered_versions(self) -> tuple[int, ...]:
        return self.versions or (self.legacy_version,)

    @property
    def ech(self) -> bool:
        """The encrypted_client_hello extension is present (real ECH or its GREASE)."""
        return EXT_ECH in self.extensions


def parse_client_hello(body: bytes) -> ClientHello:
    cur = _Cursor(body, "ClientHello")
    legacy_version = cur.uint(2)
    cur.take(32)  # random
    session_id = cur.vector(1)
    suites = _uint16_list(cur.vector(2), "cipher suites")
    cur.vector(1)  # compression methods
    sni_raw: bytes | None = None
    sni_present = False
    alpn: list[bytes] = []
    versions: list[int] = []
    sigalgs: list[int] = []
    groups: list[int] = []
    ext_types: list[int] = []
    for ext_type, data in _extensions(cur):
        ext_types.append(ext_type)
        if ext_type == EXT_SERVER_NAME:
            sni_present = True
            sni_raw = _server_name(data)
        elif ext_type == EXT_ALPN:
            alpn = _alpn_raw(data)
        elif ext_type == EXT_SIGNATURE_ALGORITHMS:
            sigalgs = _uint16_list(_Cursor(data, "signature_algorithms").vector(2),
                                   "signature_algorithms")
        elif ext_type == EXT_SUPPORTED_GROUPS:
            groups = _uint16_list(_Cursor(data, "supported_groups").vector(2), "supported_groups")
        elif ext_type == EXT_SUPPORTED_VERSIONS:
            vcur = _Cursor(data, "supported_versions")
            vlist = _Cursor(vcur.vector(1), "supported_versions")
            while vlist.remaining >= 2:
                v = vlist.uint(2)
                if not is_grease(v):
                    versions.append(v)
    return ClientHello(
        legacy_version, sni_raw, sni_present,
        tuple(p.decode("ascii", "backslashreplace") for p in alpn), tuple(versions),
        cipher_suites=tuple(suites), extensions=tuple(ext_types),
        signature_algorithms=tuple(sigalgs), supported_groups=tuple(groups),
        alpn_raw=tuple(alpn), session_id_length=len(session_id),
    )


def _uint16_list(data: bytes, what: str) -> list[int]:
    if len(data) % 2:
        raise WireError(f"{what} has an odd length")
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def _server_name(data: bytes) -> bytes | None:
    cur = _Cursor(data, "server_name extension")
    if cur.remaining == 0:
        return None  # a server's empty acknowledgement form; a client should not send it
    names = _Cursor(cur.vector(2), "server_name list")
    while names.remaining:
        name_type = names.uint(1)
        name = names.vector(2)
        if name_type == 0:  # host_name
            return name
    return None


def _alpn_raw(data: bytes) -> list[bytes]:
    return _vector_list(data, "ALPN extension", 2, "ALPN list", 1)


def _vector_list(body: bytes, what: str, outer: int, items: str, inner: int) -> list[bytes]:
    """The items of one vector (an `outer`-byte length) of `inner`-byte-length vectors."""
    vectors = _Cursor(_Cursor(body, what).vector(outer), items)
    out = []
    while vectors.remaining:
        out.append(vectors.vector(inner))
    return out


@dataclass(frozen=True)
class ServerHello:
    version: int  # the negotiated version, from supported_versions when present
    retry: bool  # a HelloRetryRequest: the client will send a second ClientHello
    alpn: str | None = None
    cipher_suite: int | None = None


def parse_server_hello(body: bytes) -> ServerHello:
    cur = _Cursor(body, "ServerHello")
    version = cur.uint(2)
    random = cur.take(32)
    cur.vector(1)  # session id
    suite = cur.uint(2)
    cur.uint(1)  # compression
    alpn = None
    for ext_type, data in _extensions(cur):
        if ext_type == EXT_SUPPORTED_VERSIONS and len(data) == 2:
            version = int.from_bytes(data, "big")
        elif ext_type == EXT_ALPN:
            protos = _alpn_raw(data)
            alpn = protos[0].decode("ascii", "backslashreplace") if protos else None
    return ServerHello(version, random == HRR_RANDOM, alpn, suite)


def parse_certificate_list(body: bytes) -> list[bytes]:
    """The DER certificates of a TLS <= 1.2 Certificate message, in served order."""
    return _vector_list(body, "Certificate message", 3, "certificate list", 3)


@dataclass(frozen=True)
class Alert:
    level: int | None  # None when the alert was encrypted
    code: int | None

    @property
    def description(self) -> str:
        return "encrypted" if self.code is None else alert_name(self.code)


def parse_alert(payload: bytes) -> Alert:
    if len(payload) != 2:
        return Alert(None, None)  # encrypted: the length alone tells it is not clear
    return Alert(payload[0], payload[1])
