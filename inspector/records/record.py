"""The tunnel record: one per CONNECT tunnel, the unit everything downstream consumes.

`Tunnel` is what the addon fills in while the tunnel lives; `Tunnel.to_record()` is
the JSON-shaped dict (design.md, `schema: 1`) that the stream, the UI, the JSON Lines
file and the export all share. Downstream code only ever sees the dict, so a record
read back from a file is indistinguishable from a live one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inspector.findings.codes import Finding, is_flagged
from inspector.observe.address import format_address, host_port  # noqa: F401 (host_port: re-exported)
from inspector.observe.handshake import CLOSED, AlertSeen
from inspector.observe.ja4 import ja4
from inspector.observe.names import cipher_suite_name, cipher_suite_names, group_names
from inspector.observe.sni import decode_sni, ech_mode
from inspector.observe.stacks import identify
from inspector.observe.wire import ClientHello, ServerHello, version_name
from inspector.records.schema import (
    SCHEMA,
    Chain,
    ClientCertificate,
    ClientHelloFields,
    Outcome,
    Record,
    ServerHelloFields,
    rfc3339,
)


@dataclass
class Tunnel:
    id: str
    client: tuple | None  # None: no client (the probe command)
    connect_host: str
    connect_port: int
    started: float = field(default_factory=time.time)
    upstream: tuple | None = None
    client_hello: ClientHello | None = None
    outcome: Outcome | None = None  # None until decided
    version: str | None = None
    alert: AlertSeen | None = None
    detail: str | None = None
    decided: float | None = None
    # The server's Certificate message (TLS <= 1.2), DER in served order.
    observed_chain: list[bytes] | None = None
    server_hello: ServerHello | None = None
    # TLS <= 1.2 mutual TLS in clear: {"requested": True, "sent": bool | None}
    client_certificate: ClientCertificate | None = None

    def to_record(self, findings: list[Finding], chain: Chain | None = None) -> Record:
        ch = self.client_hello
        f = [x.to_dict() for x in findings]
        return {
            "schema": SCHEMA,
            "id": self.id,
            "started": rfc3339(self.started),
            "client": format_address(self.client),
            "connect": {"host": self.connect_host, "port": self.connect_port},
            "upstream": {"address": format_address(self.upstream)} if self.upstream else None,
            "sni": decode_sni(ch.sni_raw) if ch and ch.sni_raw is not None else None,
            "client_hello": None if ch is None else client_hello_dict(ch, self.connect_host),
            "server_hello": None if self.server_hello is None else server_hello_dict(self.server_hello),
            "handshake": {
                # Published once decided; undecided reads as closed, as its findings do.
                "outcome": self.outcome or CLOSED,
                "version": self.version,
                "alert": self.alert.to_dict() if self.alert else None,
                "client_certificate": self.client_certificate,
                "detail": self.detail,
                "ms": None if self.decided is None else round((self.decided - self.started) * 1000, 1),
            },
            "chain": chain,
            "findings": f,
            "flagged": is_flagged(f),
        }


def client_hello_dict(ch: ClientHello, connect_host: str) -> ClientHelloFields:
    """What the client offered, and what that says about the client."""
    stack = identify(ch)
    return {
        "sni_present": ch.sni_present,
        "alpn": list(ch.alpn),
        "versions": [version_name(v) for v in ch.offered_versions],
        "cipher_suites": cipher_suite_names(ch.cipher_suites),
        "groups": group_names(ch.supported_groups),
        "ech": ech_mode(connect_host, ch),
        "ja4": ja4(ch),
        "stack": stack.name,
        "stack_evidence": list(stack.evidence),
    }


def server_hello_dict(sh: ServerHello) -> ServerHelloFields:
    """What the server chose from the offer (a HelloRetryRequest asked for another hello)."""
    return {
        "version": version_name(sh.version),
        "cipher_suite": None if sh.cipher_suite is None else cipher_suite_name(sh.cipher_suite),
        "alpn": sh.alpn,
        "retry": sh.retry,
    }


def dumps(record: Mapping[str, Any]) -> str:
    """One JSON Lines line, newline included. ASCII-only so a line is a line. Any record:
    a live `Record`, or one read back (the UI's spool)."""
    return json.dumps(record, ensure_ascii=True, separators=(",", ":")) + "\n"
