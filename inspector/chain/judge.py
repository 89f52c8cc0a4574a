"""The chain stage: for a finished tunnel, where its chain comes from and what it means.

The chain is the one the relay saw (TLS <= 1.2, `observed`), the one mitmproxy's
upstream handshake got (`intercept`), or a probe's (`probe`). When the client sent no
SNI, or another name than the CONNECT host, and the tunnel failed, a second probe with
the CONNECT host tells a server that needs SNI (`sni-required`) from a broken one.
Probes and verdicts are cached and shared (cache.py), within a memory budget;
verification itself is pure (verify.py) and runs in a worker process (worker.py).
"""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from inspector.chain.cache import SharedCache
from inspector.chain.probe import ProbeResult, probe
from inspector.chain.trust import TrustProfile
from inspector.chain.verify import ChainVerdict, chain_digest
from inspector.chain.worker import VERDICT_TIMEOUT, VerdictUnavailable, VerdictWorkers
from inspector.findings.codes import Finding, finding
from inspector.observe import handshake
from inspector.observe.sni import ECH_OUTER, decode_sni, ech_mode, ip_literal, normalise_host, sni_bytes
from inspector.records.record import Tunnel
from inspector.records.schema import Chain, ChainSource

# What the two caches may hold, each, in bytes of Python objects (cache.deep_size):
# 64 MiB in all. A verdict weighs ~0.7 KB per certificate (more with long names), a
# probe its chain's DER.
CACHE_BYTES = 32 * 2**20

# Outcomes after which the server's chain says something: the client got (or would
# have got) a certificate. connect-failed and not-tls never reached one.
_CHAIN_OUTCOMES = {
    handshake.ESTABLISHED,
    handshake.CLIENT_ALERT,
    handshake.SERVER_ALERT,
    handshake.CLOSED,
    handshake.TIMEOUT,
}


class ChainJudge:
    def __init__(
        self,
        trust: list[TrustProfile],
        clients: list[TrustProfile],
        *,
        probing: bool = True,
        probe_timeout: float = 5.0,
        upstream_proxy: tuple[str, int] | None = None,
        expiring_days: int = 30,
        ttl: float = 600.0,
        verdict_timeout: float = VERDICT_TIMEOUT,
    ) -> None:
        self.trust = trust
        self.clients = clients
        self.probing = probing
        self.probe_timeout = probe_timeout
        self.upstream_proxy = upstream_proxy
        self.expiring_days = expiring_days
        # a probe that never got an answer is not remembered: the next tunnel retries
        self.probes: SharedCache[ProbeResult] = SharedCache(
            ttl, CACHE_BYTES, keep=lambda r: r.error is None
        )
        self.verdicts: SharedCache[ChainVerdict] = SharedCache(ttl, CACHE_BYTES)
        self.workers = VerdictWorkers(trust, clients, verdict_timeout)

    def close(self) -> None:
        """Stop the verdict workers; pending verdicts end with a finding."""
        self.workers.close()

    def stats(self) -> dict:
        return {
            "probes": self.probes.misses,
            "probes_in_flight": self.probes.in_flight,
            "cache_hits": self.probes.hits + self.verdicts.hits,
        }

    @staticmethod
    def wants_chain(t: Tunnel) -> bool:
        return t.client_hello is not None and t.upstream is not None and t.outcome in _CHAIN_OUTCOMES

    async def judge(
        self,
        t: Tunnel,
        target: tuple[str, int],
        known: list[bytes] | None = None,
        source: ChainSource = "intercept",
    ) -> tuple[Chain | None, list[Finding]]:
        """(the record's chain object or None, chain findings) for a finished tunnel.

        target: where the tunnel's upstream connection went (after --connect-to).
        known: a chain already in hand (mitmproxy's upstream handshake, or the probe
        command's), labelled `source`; otherwise the relay's observed chain or a probe.
        """
        ch = t.client_hello
        sni_raw = ch.sni_raw if ch else None
        sni = decode_sni(sni_raw) if sni_raw is not None else None
        if ch is not None and ech_mode(t.connect_host, ch) == ECH_OUTER:
            # ECH: the SNI is the provider's public name; the real one is the CONNECT host
            sni, sni_raw = t.connect_host, sni_bytes(t.connect_host)
        chain, source = (known, source) if known else (t.observed_chain, "observed")
        findings: list[Finding] = []
        primary: ProbeResult | None = None
        if not chain and self.probing:
            primary = await self.probe(target, sni_raw)
            chain, source = primary.chain, "probe"

        if self.probing and t.outcome != handshake.ESTABLISHED and _sni_differs(sni, t.connect_host):
            with_name = await self.probe(target, sni_bytes(t.connect_host))
            tunnel_failed_at_server = primary is None or not primary.ok
            if with_name.ok and tunnel_failed_at_server:
                findings.append(_sni_required(sni, t.connect_host))
                if not chain:
                    chain, source = with_name.chain, "probe"
                    if primary is not None and primary.error is not None:
                        findings.append(probe_failed(
                            f"could not fetch the server's chain with the client's SNI "
                            f"({primary.error}); the chain shown is the one served for "
                            f"{t.connect_host}"
                        ))

        if not chain:
            if primary is not None and primary.error is not None:
                findings.append(probe_failed(f"could not fetch the server's chain: {primary.error}"))
            return None, findings

        try:
            verdict = await self._verify(chain, sni, t.connect_host)
        except VerdictUnavailable as e:
            return None, findings + [probe_failed(str(e))]
        return (verdict.to_dict(source) if verdict.judged else None), findings + verdict.findings

    async def probe(self, target: tuple[str, int], sni: bytes | None) -> ProbeResult:
        """A (cached, shared) probe of target with exactly these SNI bytes (None: no
        SNI), via the upstream proxy if any."""
        host, port = target

        async def run() -> ProbeResult:
            if self.upstream_proxy is not None:
                return await probe(*self.upstream_proxy, sni, timeout=self.probe_timeout,
                                   upstream_proxy=self.upstream_proxy, connect_name=target)
            return await probe(host, port, sni, timeout=self.probe_timeout)

        return await self.probes.get((host, port, sni), run)

    async def _verify(self, chain: list[bytes], sni: str | None, connect_host: str) -> ChainVerdict:
        key = (chain_digest(chain), sni, connect_host)

        async def run() -> ChainVerdict:
            return await self.workers.verify(
                chain,
                sni=sni,
                connect_host=connect_host,
                now=dt.datetime.now(dt.timezone.utc),
                expiring_days=self.expiring_days,
            )

        return await self.verdicts.get(key, run)


def _sni_differs(sni: str | None, connect_host: str) -> bool:
    if ip_literal(connect_host) is not None:
        return False  # by IP there is no name to try instead
    if sni is None:
        return True
    return normalise_host(sni) != normalise_host(connect_host)


def _sni_required(sni: str | None, connect_host: str) -> Finding:
    sent = "without SNI" if sni is None else f"with SNI {sni}"
    return finding(
        "sni-required",
        f"the server refuses this handshake {sent}; with SNI {connect_host} it works",
        f"The client must send SNI {connect_host}: set its TLS server name explicitly "
        "(clients often drop it when they connect through a proxy).",
    )


def probe_failed(message: str) -> Finding:
    return finding(
        "probe-failed",
        message,
        "The verdict is missing, not clean: probe the host by hand with "
        "`tunnel-inspector probe HOST:PORT`.",
    )


def upstream_proxy_address(modes: list[str]) -> tuple[str, int] | None:
    """The HTTP proxy behind ours, from mitmproxy's `upstream:http://HOST:PORT` mode."""
    for mode in modes:
        if mode.startswith("upstream:"):
            url = urlsplit(mode.removeprefix("upstream:"))
            if url.hostname:
                return url.hostname, url.port or (443 if url.scheme == "https" else 8080)
    return None
