"""The record's schema, in code: one JSON object per CONNECT tunnel (`schema: 1`).

Every producer (the addon, the probe command) and the consumers of live records (the
stream's sinks, the export, the text renderer) use these types; mypy checks them. A
record read back from a file is untrusted input: the reader checks only its outline
(records/jsonl.py), so it stays a plain mapping, and its consumers (the UI's model and
detail) check each field they use.

Compatibility: fields are only ever added. A reader of `schema: 1` ignores fields it
does not know; a field that is absent in an older record reads as null.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, TypedDict

# Parts the observing stage produces are defined there (it may not import records):
# the handshake's outcome, its alert, mutual TLS, and the ECH mode.
from inspector.observe.handshake import Alert, ClientCertificate, Outcome
from inspector.observe.sni import Ech

SCHEMA = 1

Severity = Literal["error", "warning", "info"]


class Connect(TypedDict):
    host: str  # as the client wrote it in the CONNECT line (before --connect-to)
    port: int


class Upstream(TypedDict):
    address: str | None  # where the tunnel's server connection went: host:port


class ClientHelloFields(TypedDict, total=False):
    sni_present: bool
    alpn: list[str]
    versions: list[str]  # offered, e.g. "TLSv1.3"
    cipher_suites: list[str]  # by IANA name, in the client's order
    groups: list[str]
    ech: Ech | None
    ja4: str
    stack: str | None  # openssl, gnutls, go, java, erlang-otp, boringssl, nss
    stack_evidence: list[str]


class ServerHelloFields(TypedDict):
    version: str | None
    cipher_suite: str | None
    alpn: str | None
    retry: bool  # a HelloRetryRequest


class Handshake(TypedDict, total=False):
    outcome: Outcome
    version: str | None
    alert: Alert | None
    client_certificate: ClientCertificate | None
    detail: str | None  # how it ended, in a sentence
    ms: float | None  # from the CONNECT to the decision


class Certificate(TypedDict, total=False):
    # One that cannot be parsed: subject "unparseable", its sha256, and nulls.
    subject: str
    issuer: str | None
    not_before: str | None
    not_after: str | None
    sha256: str
    key: str | None  # e.g. "EC secp256r1", "RSA 2048"
    signature: str | None
    in_path: bool  # used by the validated path


class Profile(TypedDict):
    trusted: bool
    error: str | None
    kind: str  # "trust" (--trust) or "client" (--client)


ChainSource = Literal["observed", "probe", "intercept"]


class Chain(TypedDict, total=False):
    source: ChainSource
    certificates: list[Certificate]  # as served
    profiles: dict[str, Profile]
    path: list[str]  # sha256 of each certificate of the validated path


class FindingFields(TypedDict):
    code: str  # a key of findings.codes.CODES
    severity: Severity
    message: str
    hint: str


class Record(TypedDict, total=False):
    schema: int
    id: str  # unique per tunnel
    started: str  # RFC 3339, UTC, milliseconds
    client: str | None
    connect: Connect
    upstream: Upstream | None
    sni: str | None  # null: the ClientHello had none
    client_hello: ClientHelloFields | None  # null: no ClientHello was seen
    server_hello: ServerHelloFields | None
    handshake: Handshake
    chain: Chain | None  # null: no chain is known
    findings: list[FindingFields]
    flagged: bool  # a finding is a warning or an error


class Export(TypedDict):
    schema: int
    exported: str  # RFC 3339, UTC, seconds
    tunnels: list[Record]


def rfc3339(when: float | dt.datetime, timespec: str = "milliseconds") -> str:
    """A timestamp (seconds since the epoch, or an aware datetime) as RFC 3339 UTC."""
    if isinstance(when, dt.datetime):
        if when.tzinfo is None:
            raise ValueError("a record's time must be timezone-aware")
        moment = when.astimezone(dt.timezone.utc)
    else:
        moment = dt.datetime.fromtimestamp(when, dt.timezone.utc)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")
