"""Findings: the stable codes the UI, the export and CI gating key on.

A finding is what the inspector concluded about one tunnel, in a sentence for the
person reading it (`message`) and a sentence that says what to fix and where (`hint`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from inspector.records.schema import FindingFields, Severity

ERROR: Final = "error"
WARNING: Final = "warning"
INFO: Final = "info"

SEVERITY_RANK: dict[str, int] = {INFO: 0, WARNING: 1, ERROR: 2}

# Every code the inspector emits, with its default severity. `stable` in design.md.
CODES: dict[str, Severity] = {
    # SNI and handshake
    "sni-missing": ERROR,
    "sni-mismatch": ERROR,
    "sni-invalid": ERROR,
    "connect-ip": INFO,
    "ech": INFO,
    "not-tls": WARNING,
    "server-alert": ERROR,
    "client-rejected-certificate": ERROR,
    "handshake-aborted": ERROR,
    "upstream-unreachable": ERROR,
    "bad-connect": ERROR,
    "proxy-loop": ERROR,
    # chain
    "sni-required": ERROR,
    "untrusted": ERROR,
    "incomplete-chain": ERROR,
    "hostname-mismatch": ERROR,
    "expired": ERROR,
    "not-yet-valid": ERROR,
    "expired-in-chain": WARNING,
    "self-signed": ERROR,
    "wrong-order": WARNING,
    "contains-anchor": INFO,
    "extra-certs": INFO,
    "weak-signature": WARNING,
    "weak-key": WARNING,
    "expiring-soon": WARNING,
    "client-fails": WARNING,
    "probe-failed": WARNING,
}


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    message: str
    hint: str

    def to_dict(self) -> FindingFields:
        return {"code": self.code, "severity": self.severity, "message": self.message, "hint": self.hint}


def finding(code: str, message: str, hint: str, severity: Severity | None = None) -> Finding:
    """A finding with the code's default severity unless the caller knows better."""
    if code not in CODES:
        raise KeyError(f"unknown finding code {code!r}")
    return Finding(code, severity or CODES[code], message, hint)


# A finding as the record holds it (or as read back: any mapping), or as computed.
AnyFinding = Mapping[str, Any] | Finding


def is_flagged(findings: Iterable[AnyFinding]) -> bool:
    """A tunnel is flagged when any finding is a warning or an error."""
    return any(_severity(f) in (WARNING, ERROR) for f in findings)


def worst_severity(findings: Iterable[AnyFinding]) -> str | None:
    severities = [_severity(f) for f in findings]
    return max(severities, key=SEVERITY_RANK.__getitem__) if severities else None


def _severity(f: AnyFinding) -> str:
    return f.severity if isinstance(f, Finding) else f["severity"]
