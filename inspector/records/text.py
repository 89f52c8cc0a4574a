"""A record as a few lines of terminal text: the `probe` command's output.

Every untrusted value (names, certificate fields, finding texts) goes through
escape.safe(); colour only when the caller says the terminal wants it.
"""

from __future__ import annotations

from inspector.records.escape import safe

_SEV_COLOUR = {"error": "\x1b[31m", "warning": "\x1b[33m", "info": "\x1b[36m"}
_RESET = "\x1b[0m"


def render(record: dict, colour: bool = False) -> str:
    def paint(text: str, sev: str) -> str:
        return f"{_SEV_COLOUR[sev]}{text}{_RESET}" if colour and sev in _SEV_COLOUR else text

    c, hs = record["connect"], record["handshake"]
    up = record.get("upstream") or {}
    sni = record.get("sni")
    lines = [
        f"target     {safe(c['host'])}:{c['port']}"
        + (f"  (connected to {safe(up.get('address'))})" if up.get("address") else ""),
        f"SNI sent   {'(none)' if sni is None else safe(sni)}",
    ]
    outcome = hs["outcome"] + (f" {hs['version']}" if hs.get("version") else "")
    if hs.get("alert"):
        a = hs["alert"]
        outcome += f"  {a['from']} alert {a['description']}" + (f" ({a['code']})" if a["code"] else "")
    if hs.get("detail") and not hs.get("alert"):
        outcome += f"  ({safe(hs['detail'])})"
    lines.append(f"handshake  {outcome}")

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
