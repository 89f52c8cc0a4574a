"""A record as text: the one renderer every view uses.

The words for a record's parts (target, SNI, outcome) come from here, for the headless
line, the probe report and the UI alike; whether an SNI is missing or mismatched is
read from the findings, never decided again by comparing strings. Every untrusted
value (names, certificate fields, finding texts) goes through escape.safe(); colour
only when the caller says the terminal wants it.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet

from inspector.findings.codes import worst_severity
from inspector.observe.address import host_port
from inspector.records.escape import safe
from inspector.records.schema import Handshake, Record

_SEV_COLOUR = {"error": "\x1b[31m", "warning": "\x1b[33m", "info": "\x1b[36m"}
_RESET = "\x1b[0m"

# How the SNI stands next to the CONNECT target, as the findings say.
SNI_OK = "ok"
SNI_MISSING = "missing"  # no SNI, and the analysis says one was needed (sni-missing)
SNI_ABSENT = "absent"  # no SNI where none is needed (a CONNECT to an IP address)
SNI_NOT_SEEN = "not-seen"  # no ClientHello was seen
SNI_MISMATCH = "mismatch"  # sni-mismatch or sni-invalid
SNI_BAD_CODES = frozenset({"sni-mismatch", "sni-invalid"})


def plural(n: int, noun: str) -> str:
    """`1 tunnel`, `2 tunnels`, `1,000 hosts`."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def codes(record: Mapping) -> set[str]:
    """The finding codes of a record; one read back may hold anything, so only strings count."""
    found = (f.get("code") for f in record.get("findings") or () if isinstance(f, dict))
    return {c for c in found if isinstance(c, str)}


def target_text(host: object, port: object) -> str:
    return host_port(safe(host), safe(port))


def sni_state(record: Mapping, found: AbstractSet[str] | None = None) -> str:
    found = codes(record) if found is None else found
    if record.get("sni") is None:
        if record.get("client_hello") is None:
            return SNI_NOT_SEEN
        return SNI_MISSING if "sni-missing" in found else SNI_ABSENT
    return SNI_MISMATCH if found & SNI_BAD_CODES else SNI_OK


def sni_text(record: Mapping) -> str:
    sni = record.get("sni")
    if sni is None:
        return "(not seen)" if record.get("client_hello") is None else "(none)"
    return safe(sni)


def outcome_text(handshake: Mapping) -> str:
    """`established TLSv1.3`, `server alert: unrecognized_name`, `timeout after client
    alert: ...` (a warning alert, then silence), or the outcome itself."""
    outcome = safe(handshake.get("outcome")) or "?"
    alert = handshake.get("alert")
    if isinstance(alert, dict):
        text = f"{safe(alert.get('from'))} alert: {safe(alert.get('description'))}"
        return f"timeout after {text}" if outcome == "timeout" else text
    version = handshake.get("version")
    if outcome == "established" and version:
        return f"established {safe(version)}"
    return outcome


def line(record: Record, colour: bool = False) -> str:
    """One line per tunnel (the headless output); every finding code, info included."""
    c = record["connect"]
    found = [f for f in record.get("findings", [])]
    parts = [
        record["started"][11:19],
        safe(record.get("client")),
        f"CONNECT {target_text(c['host'], c['port'])}",
        f"SNI: {sni_text(record)}",
        outcome_text(record["handshake"]),
    ]
    text = "  ".join(parts) + (f"  [{', '.join(safe(f['code']) for f in found)}]" if found else "")
    sev = worst_severity([f for f in found if f["severity"] != "info"])
    if colour and sev in _SEV_COLOUR:
        return f"{_SEV_COLOUR[sev]}{text}{_RESET}"
    return text


def _handshake_line(hs: Handshake) -> str:
    outcome = safe(hs.get("outcome")) + (f" {safe(hs['version'])}" if hs.get("version") else "")
    alert = hs.get("alert")
    if alert:
        outcome += f"  {outcome_text(hs)}" + (f" ({alert['code']})" if alert["code"] else "")
    if hs.get("detail") and not alert:
        outcome += f"  ({safe(hs['detail'])})"
    return outcome


def report(record: Record, colour: bool = False) -> str:
    """The record in a few lines: the `probe` command's output."""

    def paint(text: str, sev: str) -> str:
        return f"{_SEV_COLOUR[sev]}{text}{_RESET}" if colour and sev in _SEV_COLOUR else text

    c = record["connect"]
    up = record.get("upstream")
    address = up.get("address") if up else None
    lines = [
        f"target     {target_text(c['host'], c['port'])}"
        + (f"  (connected to {safe(address)})" if address else ""),
        f"SNI sent   {sni_text(record)}",
        f"handshake  {_handshake_line(record['handshake'])}",
    ]

    chain = record.get("chain")
    if chain:
        lines.append(f"chain      {len(chain['certificates'])} certificates ({chain['source']}), as served:")
        for i, cert in enumerate(chain["certificates"]):
            mark = "*" if cert.get("in_path") else " "
            lines.append(f"  {mark}{i}  {safe(cert.get('subject'), 120)}")
            lines.append(f"       issuer  {safe(cert.get('issuer'), 120)}")
            lines.append(
                f"       valid   {cert.get('not_before', '?')} .. {cert.get('not_after', '?')}"
                f"   {safe(cert.get('key', ''))}  {safe(cert.get('signature', ''))}"
            )
        if any(cert.get("in_path") for cert in chain["certificates"]):
            lines.append("       (* = used by the validated path)")
        for name, prof in (chain.get("profiles") or {}).items():
            verdict = "trusted" if prof.get("trusted") else f"REJECTED: {safe(prof.get('error'))}"
            lines.append(f"  {prof.get('kind', 'trust'):6} {safe(name)}: {verdict}")
    else:
        lines.append("chain      (not available)")

    findings = record.get("findings") or []
    if findings:
        lines.append("findings")
        for f in findings:
            lines.append("  " + paint(f"{f['severity']:8} {f['code']}", f["severity"])
                         + f"  {safe(f['message'], 400)}")
            lines.append(f"           fix: {safe(f['hint'], 400)}")
    else:
        lines.append("findings   none")
    return "\n".join(lines)
