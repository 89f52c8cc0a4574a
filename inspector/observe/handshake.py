"""How a TLS handshake ended, read from the relayed bytes of both directions.

`HandshakeTracker` is a pure state machine: feed it the bytes each side sent, in the
order the proxy relayed them, and it decides the outcome as soon as the bytes allow.
Once decided it ignores further input, so the relay's hot path costs one attribute
check per message after the handshake.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Final, Literal, TypedDict

from inspector.observe import wire

# How a handshake ended: the record's handshake.outcome (records/schema.py).
Outcome = Literal["established", "server-alert", "client-alert", "closed", "not-tls",
                  "connect-failed", "timeout"]
ESTABLISHED: Final = "established"
SERVER_ALERT: Final = "server-alert"
CLIENT_ALERT: Final = "client-alert"
CLOSED: Final = "closed"
NOT_TLS: Final = "not-tls"
CONNECT_FAILED: Final = "connect-failed"
TIMEOUT: Final = "timeout"

OUTCOMES = (ESTABLISHED, SERVER_ALERT, CLIENT_ALERT, CLOSED, NOT_TLS, CONNECT_FAILED, TIMEOUT)

# Client alerts that mean "I do not accept your certificate".
CERTIFICATE_REJECTIONS = {42, 43, 44, 45, 46, 48, 113, 114}

# TLS 1.3 cipher suites: (hash length, AEAD tag length). An encrypted record is its
# content + 1 byte of content type + the tag + any padding (JSSE pads every record
# with 16 zero bytes). The ServerHello names the suite, so the sizes are known:
# - a record of at most 4 + tag bytes (20) holds less than a handshake message header
#   and its type byte: nothing but an alert fits (2 bytes + type + tag = 19);
# - a Finished record is at least 4 + hash + 1 + tag bytes (53 for SHA-256 suites, 69
#   for SHA-384): a shorter record is an alert padded (JSSE: 35), 0-RTT's
#   EndOfEarlyData (21) or an empty client Certificate (25); what follows tells.
TLS13_SUITES = {0x1301: (32, 16), 0x1302: (48, 16), 0x1303: (32, 16), 0x1304: (32, 16),
                0x1305: (32, 8)}


def tls13_record_bounds(suite: int | None) -> tuple[int, int]:
    """(largest record that can only be an alert, smallest Finished record) for a suite;
    an unknown suite is taken as the common SHA-256 / 16-byte tag kind."""
    hash_len, tag = TLS13_SUITES.get(suite, (32, 16)) if suite is not None else (32, 16)
    return 4 + tag, 4 + hash_len + 1 + tag


# The outcome note of a client that completed the handshake and left without a byte of
# data: curl and Node check the host name after the handshake, OkHttp its pins.
CLOSED_AFTER_HANDSHAKE = (
    "closed right after the handshake: the client sent no data, so a check after the "
    "handshake (e.g. host name or pinning) may have failed, or it only opened the connection"
)

WARNING_LEVEL = 1

# Bounds on what is buffered before a decision: a Certificate message with a long
# chain is the largest thing a handshake carries in clear; a longer message is counted
# past, not buffered. Bytes are only counted, so the undecided limit can allow the
# largest legal message (2^24) before giving up on a handshake that never ends.
HANDSHAKE_MESSAGE_LIMIT = 256 * 1024
UNDECIDED_BYTES_LIMIT = 17 * 1024 * 1024


# The record's handshake.alert; "from" is a Python keyword: the functional form keeps the JSON name.
Alert = TypedDict("Alert", {"from": Literal["client", "server"], "code": int | None,
                            "description": str})


class ClientCertificate(TypedDict):
    """The record's handshake.client_certificate: TLS <= 1.2 mutual TLS seen in clear."""

    requested: bool
    sent: bool | None


@dataclass(frozen=True)
class AlertSeen:
    sender: Literal["client", "server"]
    code: int | None  # None when encrypted
    # A server's alert that answered the client's certificate: asked for in clear
    # (TLS <= 1.2), or the client's encrypted flight that carries it (TLS 1.3).
    client_certificate: bool = False

    def to_dict(self) -> Alert:
        desc = "encrypted" if self.code is None else wire.alert_name(self.code)
        return {"from": self.sender, "code": self.code, "description": desc}


class _Side:
    def __init__(self) -> None:
        self.records = wire.RecordReader()
        self.handshake = wire.HandshakeReader(HANDSHAKE_MESSAGE_LIMIT)
        self.bytes = 0
        self.ccs = False


class HandshakeTracker:
    def __init__(self) -> None:
        self._client = _Side()
        self._server = _Side()
        self.client_hello: wire.ClientHello | None = None
        self.server_hello: wire.ServerHello | None = None
        self.certificates: list[bytes] | None = None  # TLS <= 1.2 Certificate, served order
        self.alert: AlertSeen | None = None
        self.warning: AlertSeen | None = None  # a warning alert the handshake went on past
        self.certificate_requested = False  # a CertificateRequest in clear (TLS <= 1.2)
        # TLS <= 1.2: the client's Certificate message after a CertificateRequest: True
        # with a certificate, False empty ("I have none"); None when not seen.
        self.client_certificate_sent: bool | None = None
        # TLS 1.3: the client answered the server's flight with its own (not an alert);
        # established once the server answers that without an alert.
        self.client_answered = False
        # TLS 1.3: the client's records since the server's flight that are too short for
        # a Finished: its last word if it closes now (an alert), or not if a Finished follows.
        self._client_short: int | None = None
        # TLS 1.3: what the client sent after its Finished: "data", or "alert" (close_notify)
        self._client_after: str | None = None
        # Established, and still reading the client's next record or its close: did it
        # send data, or leave right after the handshake (CLOSED_AFTER_HANDSHAKE)?
        self._watching = False
        self.first_close: str | None = None  # "client" | "server": who closed first
        self.outcome: Outcome | None = None
        self.detail: str | None = None  # a sentence on how it ended, for the record
        self.client_hello_error: str | None = None

    @property
    def decided(self) -> bool:
        return self.outcome is not None

    @property
    def settled(self) -> bool:
        """Decided, and nothing more to read: the record can be written."""
        return self.outcome is not None and not self._watching

    def client_certificate(self) -> ClientCertificate | None:
        """TLS <= 1.2 mutual TLS as seen in clear: asked for, and the client's answer."""
        if not self.certificate_requested:
            return None
        return {"requested": True, "sent": self.client_certificate_sent}

    @property
    def version(self) -> str | None:
        if self.server_hello is None or self.server_hello.retry:
            return None
        return wire.version_name(self.server_hello.version)

    def feed(self, from_client: bool, data: bytes) -> bool:
        """Take one relayed chunk; True once the outcome is known (`settled` says when
        the note on what followed the handshake is known too)."""
        if self.settled:
            return True
        side = self._client if from_client else self._server
        if side.bytes == 0 and not wire.looks_like_tls(data[:3], from_client):
            who = "client" if from_client else "server"
            self._decide(NOT_TLS, f"the {who} sent non-TLS bytes: {_preview(data)}")
            return True
        side.bytes += len(data)
        try:
            for record in side.records.feed(data):
                if self._watching:
                    self._watch(from_client, record)
                else:
                    self._record(from_client, side, record)
                if self.settled:
                    return True
        except wire.WireError as e:
            if self._watching:  # not TLS records after a good handshake: not ours to judge
                self._settle(None)
            elif from_client and self.client_hello is None:
                self.client_hello_error = str(e)
                self._decide(NOT_TLS, f"malformed ClientHello: {e}")
            else:
                who = "client" if from_client else "server"
                self._decide(CLOSED, f"the {who} sent malformed TLS: {e}")
            return True
        if self._watching:
            return True
        if self._client.bytes + self._server.bytes > UNDECIDED_BYTES_LIMIT:
            self._decide(CLOSED, "more than 17 MiB relayed without a recognisable handshake end")
        return self.outcome is not None

    def side_closed(self, from_client: bool) -> None:
        """One direction ended (FIN or reset: the proxy sees both as EOF).

        The relay keeps the other direction open (TCP half-close), so the peer may
        still answer the end itself; but a side that ends before its part of the
        handshake is done has given the handshake up, and that decides it now.
        """
        if self.first_close is None:
            self.first_close = "client" if from_client else "server"
        if self._watching:
            self._settle(CLOSED_AFTER_HANDSHAKE if from_client else None)
            return
        side = self._client if from_client else self._server
        if not self.decided and not (side.ccs and self._tls12()) and not self.client_answered:
            self.closed()

    def closed(self) -> None:
        """The tunnel closed, both ways."""
        if self._watching:
            self._settle(CLOSED_AFTER_HANDSHAKE if self.first_close == "client" else None)
            return
        if self.outcome is not None:
            return
        if self.alert is None and self._client_short is not None and not self.client_answered:
            # The client's last record was too short for a Finished, and nothing followed:
            # an encrypted alert, padded (JSSE pads every TLS 1.3 record with 16 bytes).
            self.alert = AlertSeen("client", None)
        if self.alert is None and self.warning is not None:
            self.alert = self.warning  # the last word before the close
        if self.alert is not None:
            self._decide_alert()
            return
        by = f"the {self.first_close}" if self.first_close else "the tunnel"
        if self.client_answered:
            if self.first_close == "server":
                self._decide(CLOSED, "the server closed after the client's part of the TLS 1.3 "
                                     "handshake, without a word: it refused it")
            else:  # the server had nothing to object to before the client went
                self._decide(ESTABLISHED, None if self._client_after == "data"
                             else CLOSED_AFTER_HANDSHAKE)
        elif self._client.bytes == 0:
            self._decide(CLOSED, "the tunnel closed before the client sent anything")
        elif self.client_hello is None:
            self._decide(CLOSED, f"{by} closed before a complete ClientHello")
        elif self.server_hello is None:
            if self.first_close == "client":
                self._decide(CLOSED, "the client closed after its ClientHello, before the server answered")
            else:
                self._decide(CLOSED, f"{by} closed after the ClientHello without an alert")
        elif self.certificates is not None:
            self._decide(CLOSED, f"{by} closed after the server's certificate, without an alert")
        elif self._tls13() and self.first_close == "client":
            self._decide(CLOSED, CLIENT_LEFT_SILENTLY)
        else:
            self._decide(CLOSED, f"{by} closed after the ServerHello, before the handshake finished")

    def timed_out(self, seconds: float) -> None:
        if self._watching:  # an idle client after a good handshake
            self._settle(None)
            return
        if self.outcome is not None:
            return
        if self.alert is None and self._client_short is not None and not self.client_answered:
            self.alert = AlertSeen("client", None)  # a padded alert, and the client went quiet
            self._decide_alert()
            return
        if self.client_answered:  # a quiet server that has not objected either
            self._decide(ESTABLISHED, None)
            return
        if self.client_hello is None:
            what = "no ClientHello"
        elif self.server_hello is None:
            what = "no ServerHello"
        else:
            what = "the handshake did not finish"
        after = ""
        if self.warning is not None:  # the last word before the silence
            self.alert = self.warning
            desc = self.warning.to_dict()["description"]
            after = f", after the {self.warning.sender}'s warning alert {desc}"
        self._decide(TIMEOUT, f"{what} within {seconds:g} s{after}")

    def _record(self, from_client: bool, side: _Side, record: wire.Record) -> None:
        # After its ChangeCipherSpec a TLS <= 1.2 side encrypts every record. In TLS 1.3
        # the CCS is a compatibility no-op, also sent around a HelloRetryRequest before
        # the second ClientHello and ServerHello (in clear), and encrypted records always
        # travel as application data.
        encrypted = side.ccs and self._tls12()
        if record.type == wire.HANDSHAKE and not encrypted:
            for msg_type, body in side.handshake.feed(record.payload):
                self._handshake_message(from_client, msg_type, body)
        elif record.type == wire.ALERT:
            alert = wire.parse_alert(record.payload) if not encrypted else wire.Alert(None, None)
            if alert.code == 0:
                return  # close_notify is no verdict
            sender: Literal["client", "server"] = "client" if from_client else "server"
            seen = AlertSeen(sender, alert.code, sender == "server" and self.certificate_requested)
            if alert.level == WARNING_LEVEL:
                # e.g. a TLS 1.2 server's warning unrecognized_name: the handshake goes on
                self.warning = seen
                return
            self.alert = seen
            self._decide_alert()
        elif record.type == wire.CHANGE_CIPHER_SPEC:
            side.ccs = True
            if self._tls12() and self._client.ccs and self._server.ccs:
                self._established()
        elif self._tls13():  # encrypted application data records, after the ServerHello
            self._tls13_encrypted(from_client, len(record.payload))

    def _tls13_encrypted(self, from_client: bool, size: int) -> None:
        """TLS 1.3 hides the rest of the handshake; record sizes and order still tell.

        The client's first records after the server's flight are an alert (it rejected
        the server's certificate) or its own flight (0-RTT's end, its certificate, its
        Finished): sizes from the cipher suite tell a Finished, and a record too short
        for one is an alert if nothing follows it. The server's next record answers the
        client's flight: an alert refuses the client's certificate, anything else accepts.
        """
        assert self.server_hello is not None  # called only once _tls13() holds
        alert_max, finished_min = tls13_record_bounds(self.server_hello.cipher_suite)
        if from_client and not self.client_answered:
            if size <= alert_max:
                self.alert = AlertSeen("client", None)
                self._decide_alert()
            elif size >= finished_min:
                self.client_answered = True
            else:
                self._client_short = size
        elif from_client:
            if self._client_after is None:
                self._client_after = "alert" if size <= alert_max else "data"
        elif self.client_answered:
            if size <= alert_max:
                self.alert = AlertSeen("server", None, client_certificate=True)
                self._decide_alert()
            else:
                self._established()

    def _established(self) -> None:
        """The handshake is done; the record waits for the client's first data or close,
        unless what it sent after its Finished already tells."""
        if self._client_after == "data":
            self._decide(ESTABLISHED, None)
        elif self._client_after == "alert":
            self._decide(ESTABLISHED, CLOSED_AFTER_HANDSHAKE)
        else:
            self._decide(ESTABLISHED, None)
            self._watching = True
            # From now on only record types and sizes matter: keep no payloads.
            for side in (self._client, self._server):
                side.records.keep_headers_only()
                side.handshake = wire.HandshakeReader(HANDSHAKE_MESSAGE_LIMIT)

    def _watch(self, from_client: bool, record: wire.Record) -> None:
        """After the handshake: the client's first data settles it; an alert first (its
        close_notify) means it is leaving without any. A TLS <= 1.2 server's data
        settles it too (a protocol where the server speaks first)."""
        if record.type not in (wire.APPLICATION_DATA, wire.ALERT):
            return  # a TLS 1.2 Finished that follows the other side's (resumption)
        if not from_client:
            if self._tls12() and record.type == wire.APPLICATION_DATA:
                self._settle(None)
            return
        sh = self.server_hello
        alert_max = tls13_record_bounds(sh.cipher_suite)[0] if sh is not None and self._tls13() else -1
        if record.type == wire.APPLICATION_DATA and record.size > alert_max:
            self._settle(None)
        else:  # its close_notify: whoever's EOF the relay sees first, the client is leaving
            self._settle(CLOSED_AFTER_HANDSHAKE)

    def _settle(self, note: str | None) -> None:
        self._watching = False
        self.detail = note
        self._client = self._server = _Side()

    def _handshake_message(self, from_client: bool, msg_type: int, body: bytes | None) -> None:
        if from_client and self.client_hello is None and msg_type != wire.CLIENT_HELLO:
            raise wire.WireError(f"the client's first handshake message is of type {msg_type}, "
                                 "not a ClientHello")
        if body is None:
            # Over HANDSHAKE_MESSAGE_LIMIT: legal (a Certificate message may be up to
            # 16 MiB) but passed over unread. The records around it still tell how the
            # handshake ends; the chain then comes from a probe.
            if msg_type in (wire.CLIENT_HELLO, wire.SERVER_HELLO):
                who = "client" if from_client else "server"
                raise wire.WireError(f"the {who}'s hello is over {HANDSHAKE_MESSAGE_LIMIT} bytes")
            return
        if from_client and msg_type == wire.CLIENT_HELLO:
            if self.client_hello is None:  # a second one follows a HelloRetryRequest
                self.client_hello = wire.parse_client_hello(body)
        elif not from_client and msg_type == wire.SERVER_HELLO:
            self.server_hello = wire.parse_server_hello(body)
        elif not from_client and msg_type == wire.CERTIFICATE and not self._tls13():
            self.certificates = wire.parse_certificate_list(body)
        elif not from_client and msg_type == wire.CERTIFICATE_REQUEST:
            self.certificate_requested = True
        elif from_client and msg_type == wire.CERTIFICATE and self._tls12():
            self.client_certificate_sent = bool(wire.parse_certificate_list(body))

    def _tls13(self) -> bool:
        sh = self.server_hello
        return sh is not None and not sh.retry and sh.version >= 0x0304

    def _tls12(self) -> bool:
        sh = self.server_hello
        return sh is not None and sh.version < 0x0304

    def _decide_alert(self) -> None:
        assert self.alert is not None
        a = self.alert
        self._decide(
            SERVER_ALERT if a.sender == "server" else CLIENT_ALERT,
            f"{a.sender} sent alert {a.to_dict()['description']}",
        )

    def end(self, outcome: Outcome, detail: str | None) -> None:
        """Decide from outside the bytes (connect failure, proxy shutdown)."""
        if self._watching:
            self._settle(None)
        elif self.outcome is None:
            self._decide(outcome, detail)

    def _decide(self, outcome: Outcome, detail: str | None) -> None:
        self.outcome = outcome
        self.detail = detail
        if outcome != ESTABLISHED:
            # Nothing more will be read: let the buffers go (_established may still watch).
            self._client = self._server = _Side()


CLIENT_LEFT_SILENTLY = (
    "the client closed after the server's TLS 1.3 flight without answering it (no "
    "Finished, no alert): it refused something the server sent, most likely the certificate"
)


def connect_error_text(error: str | None) -> str:
    """asyncio's "[Errno 111] Connect call failed (...)" as "connection refused: ..."."""
    if not error:
        return "no connection"
    m = re.match(r"\[Errno (-?\d+)\] ?(.*)", error)
    if m is None:
        return error
    errno_, rest = int(m.group(1)), m.group(2)
    # negative numbers are getaddrinfo's (EAI_*): their text is already in `rest`
    return rest if errno_ < 0 else f"{os.strerror(errno_).lower()}: {rest}"


def alert_in_error_text(error: str) -> int | None:
    """The alert code named in an OpenSSL error ("tlsv1 alert unknown ca",
    "tlsv1 unrecognized name"), or None: intercept mode only gets OpenSSL's text."""
    text = error.lower()
    for code, name in sorted(wire.ALERT_NAMES.items(), key=lambda kv: -len(kv[1])):
        if code and name.replace("_", " ") in text:
            return code
    return None


def _preview(data: bytes, n: int = 24) -> str:
    return repr(data[:n])[2:-1] + ("..." if len(data) > n else "")
