"""`tunnel-inspector probe HOST[:PORT]`: one verdict, no proxy.

The probe is judged exactly like a tunnel (same record, same findings), as if a client
had sent this SNI through the proxy: exit 0 clean, 1 flagged, 2 could not probe.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

from inspector.chain.judge import ChainJudge, upstream_proxy_address
from inspector.chain.trust import TrustError, load_client_profile, load_profile
from inspector.findings.tunnel import tunnel_findings
from inspector.observe.connect_to import ConnectTo, ConnectToError
from inspector.observe.sni import ip_literal, sni_bytes
from inspector.observe.wire import ClientHello
from inspector.records.record import Tunnel
from inspector.records.text import report

EXIT_OK, EXIT_FLAGGED, EXIT_NO_PROBE = 0, 1, 2


def parse_target(text: str) -> tuple[str, int]:
    """HOST, HOST:PORT, [V6] or [V6]:PORT; the port defaults to 443."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "443"
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, "443"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST[:PORT]")
    return host, int(port)


async def run_probe(args: argparse.Namespace) -> int:
    try:
        host, port = parse_target(args.target)
        target = ConnectTo(args.connect_to or []).target(host, port) or (host, port)
        trust = [load_profile(spec) for spec in (args.trust or ["mozilla"])]
        clients = [load_client_profile(spec) for spec in args.client or []]
        upstream = upstream_proxy_address([f"upstream:{args.upstream_proxy}"]) \
            if args.upstream_proxy else None
    except (ValueError, ConnectToError, TrustError) as e:
        print(f"tunnel-inspector probe: {e}", file=sys.stderr)
        return EXIT_NO_PROBE
    sni = None if args.no_sni else args.sni or (None if ip_literal(host) else host)

    judge = ChainJudge(trust, clients, probe_timeout=args.probe_timeout,
                       upstream_proxy=upstream, expiring_days=args.expiring_days)
    raw = None if sni is None else sni_bytes(sni)
    try:
        return await _judged(args, judge, target, host, port, raw)
    finally:
        judge.close()


async def _judged(args, judge: ChainJudge, target, host: str, port: int, raw: bytes | None) -> int:
    """Probe with the SNI bytes `raw`, judge, print; the exit code."""
    started = time.time()
    result = await judge.probe(target, raw)
    if result.outcome is None:
        print(f"tunnel-inspector probe: could not probe {args.target}: {result.error}",
              file=sys.stderr)
        return EXIT_NO_PROBE

    t = Tunnel(
        id=str(uuid.uuid4()),
        client=None,
        connect_host=host,
        connect_port=port,
        started=started,
        upstream=target,
        client_hello=ClientHello(0x0303, raw, raw is not None),
        outcome=result.outcome,
        version=result.version,
        alert=result.alert,
        decided=time.time(),
    )
    chain, chain_findings = await judge.judge(t, target, result.chain, source="probe")
    record = t.to_record(tunnel_findings(t, chain_findings=chain_findings), chain)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print(report(record, colour=sys.stdout.isatty()))
    return EXIT_FLAGGED if record["flagged"] else EXIT_OK
