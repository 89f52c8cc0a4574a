"""What a stranger's chain may cost: verify.py's bounds, the verdict worker process
(the event loop stays free, a verdict over its time is stopped with a finding), and
the verdict cache's memory budget."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import pickle
import time
import tracemalloc

from inspector.chain import verify
from inspector.chain.cache import SharedCache, deep_size
from inspector.chain.judge import CACHE_BYTES, ChainJudge
from inspector.chain.probe import ProbeResult
from inspector.chain.trust import load_profile
from inspector.chain.verify import ChainVerdict, verify_chain
from inspector.chain.worker import VerdictUnavailable, VerdictWorkers
from inspector.lab.pki import make_cert
from inspector.observe.wire import ClientHello
from inspector.records.record import Tunnel

NAME = "fake.lab.test"
NOW = dt.datetime.now(dt.timezone.utc)


def _same_name(n: int, *, reverse: bool) -> list[bytes]:
    """A leaf and n - 1 CAs all named "hostile", each issued by the one before it;
    served in issuing order, or top first (`reverse`): then the served walk scans all
    remaining CAs at each step."""
    cas = [make_cert("hostile", ca=True)]
    for _ in range(n - 2):
        cas.append(make_cert("hostile", cas[-1], ca=True))
    leaf = make_cert(NAME, cas[-1], sans=(NAME,))
    served = cas if reverse else cas[::-1]
    return [leaf.der] + [c.der for c in served]


def _distinct(n: int) -> list[bytes]:
    cas = [make_cert("ca 0", ca=True)]
    for i in range(1, n - 1):
        cas.append(make_cert(f"ca {i}", cas[-1], ca=True))
    return [make_cert(NAME, cas[-1], sans=(NAME,)).der] + [c.der for c in reversed(cas)]


def _verify(chain: list[bytes]):
    return verify_chain(chain, sni=NAME, connect_host=NAME, trust=[load_profile("mozilla")],
                        clients=[], now=NOW)


def _tunnel(chain: list[bytes]) -> Tunnel:
    return Tunnel("t", ("127.0.0.1", 1), NAME, 443,
                  client_hello=ClientHello(0x0303, NAME.encode(), True),
                  upstream=("127.0.0.1", 1), outcome="established", observed_chain=chain)


# --- verify.py's bounds -----------------------------------------------------------


def test_a_chain_over_the_certificate_bound_is_not_judged():
    assert verify.MAX_CERTIFICATES < 101
    v = _verify(_distinct(101))
    assert v.judged is False and v.certificates == () and v.profiles == ()
    assert [(f.code, f.severity) for f in v.findings] == [("probe-failed", "warning")]
    assert v.findings[0].message.startswith("chain too large to judge: 101 certificates")


def test_a_walk_over_the_signature_budget_is_not_judged():
    """50 certificates of one name served in reverse need 1,275 signature checks."""
    v = _verify(_same_name(50, reverse=True))
    assert v.judged is False
    assert [f.code for f in v.findings] == ["probe-failed"]
    assert "chain too large to judge: 50 certificates" in v.findings[0].message
    assert "signature checks" in v.findings[0].message


def test_the_same_chain_in_issuing_order_is_judged():
    """The bound is on work, not on a name repeated: in order, the walk is linear."""
    v = _verify(_same_name(50, reverse=False))
    assert v.judged is True and len(v.certificates) == 50
    assert "probe-failed" not in [f.code for f in v.findings]


# --- the worker process -----------------------------------------------------------


async def _worst_loop_lag(job) -> tuple[float, object]:
    """(longest the event loop went without running a 5 ms ticker, the job's result)."""
    lags: list[float] = []
    done = False

    async def ticker():
        while not done:
            t = time.monotonic()
            await asyncio.sleep(0.005)
            lags.append(time.monotonic() - t - 0.005)

    task = asyncio.create_task(ticker())
    try:
        result = await job
    finally:
        done = True
        await task
    return max(lags, default=0.0), result


def test_a_slow_verdict_leaves_the_event_loop_free():
    # 100 certificates of one name in order, 6 profiles: ~0.4 s of path building
    chain = _same_name(100, reverse=False)
    profiles = [load_profile("mozilla", name=f"store {i}") for i in range(6)]

    async def run():
        judge = ChainJudge(profiles, [], probing=False)
        try:
            await judge.judge(_tunnel(chain[:2]), ("127.0.0.1", 1))  # the worker is up
            started = time.monotonic()
            lag, (record_chain, findings) = await _worst_loop_lag(
                judge.judge(_tunnel(chain), ("127.0.0.1", 1))
            )
            return lag, time.monotonic() - started, record_chain, findings
        finally:
            judge.close()

    lag, took, record_chain, findings = asyncio.run(run())
    assert record_chain is not None and len(record_chain["certificates"]) == 100
    assert set(record_chain["profiles"]) == {f"store {i}" for i in range(6)}
    # The work was real (newer cryptography releases are faster: 0.1-0.4 s here), and the
    # loop stalled for a small part of it; run in the loop, it would stall for all of it.
    assert took > 0.05
    assert lag < min(0.1, took / 2), f"the event loop stalled {lag:.3f} s during a {took:.2f} s verdict"


def test_a_verdict_over_its_time_is_stopped_with_a_finding():
    chain = _same_name(100, reverse=False)
    # 12 profiles: well over the 0.1 s allowed below with any cryptography release
    profiles = [load_profile("mozilla", name=f"store {i}") for i in range(12)]

    async def run():
        judge = ChainJudge(profiles, [], probing=False, verdict_timeout=0.1)
        try:
            slow = await judge.judge(_tunnel(chain), ("127.0.0.1", 1))
            judge.workers.timeout = 30  # the next verdict gets a new worker, and time
            fine = await judge.judge(_tunnel(chain[:2]), ("127.0.0.1", 1))
            return slow, fine
        finally:
            judge.close()

    (slow_chain, slow_findings), (fine_chain, _) = asyncio.run(run())
    assert slow_chain is None
    assert [(f.code, f.message) for f in slow_findings] == [(
        "probe-failed", "no chain verdict: judging the chain took over 0.1 s, so it was stopped"
    )]
    assert fine_chain is not None and len(fine_chain["certificates"]) == 2


def test_chains_waiting_for_the_worker_are_bounded_in_bytes():
    """Tunnels can bring chains faster than they are judged: past `max_waiting` bytes
    queued, a verdict is refused at once instead of holding its chain."""
    chain = _distinct(100)  # ~45 KB
    size = sum(map(len, chain))

    async def run():
        workers = VerdictWorkers([load_profile("mozilla")], [], max_waiting=3 * size)
        try:
            asks = [workers.verify(chain, sni=f"n{i}.lab.test", connect_host=NAME, now=NOW,
                                   expiring_days=30) for i in range(8)]
            return await asyncio.gather(*asks, return_exceptions=True)
        finally:
            workers.close()

    results = asyncio.run(run())
    judged = [r for r in results if isinstance(r, ChainVerdict)]
    refused = [str(r) for r in results if isinstance(r, VerdictUnavailable)]
    assert len(judged) == 3 and len(refused) == 5, results
    assert all(len(v.certificates) == 100 for v in judged)
    assert all(m.startswith("no chain verdict: 0.") and m.endswith(
        " MiB of other chains already wait for the verdict worker") for m in refused)


# --- the cache's memory budget ----------------------------------------------------


def test_the_probe_cache_is_bounded_by_bytes_not_entries():
    """80 probes of 1 MB chains: a count bound (4096) would keep all 80 MB."""
    judge = ChainJudge([load_profile("mozilla")], [], probing=False)
    megabyte = os.urandom(2**20)

    async def fill():
        for i in range(80):
            chain = [megabyte[:-1] + bytes([i])]  # each entry its own bytes

            async def make(chain=chain):
                return ProbeResult(NAME.encode(), chain, "established")

            await judge.probes.get(("127.0.0.1", 443, f"h{i}".encode()), make)

    try:
        asyncio.run(fill())
    finally:
        judge.close()
    assert judge.probes.misses == 80
    assert judge.probes.bytes <= CACHE_BYTES
    assert 0 < len(judge.probes) <= CACHE_BYTES // 2**20


def test_an_entry_over_the_whole_budget_is_answered_not_kept():
    cache: SharedCache[bytes] = SharedCache(600, max_bytes=1000)

    async def make():
        return b"x" * 5000

    assert asyncio.run(cache.get("k", make)) == b"x" * 5000
    assert len(cache) == 0 and cache.bytes == 0


def test_a_verdicts_weight_is_what_it_holds_in_memory():
    """deep_size is the cache's scale: within 25% of what tracemalloc sees."""
    verdict = _verify(_distinct(100))
    blob = pickle.dumps(verdict)
    tracemalloc.start()
    try:
        copies = [pickle.loads(blob) for _ in range(5)]
        held = tracemalloc.get_traced_memory()[0] / len(copies)
    finally:
        tracemalloc.stop()
    assert 0.75 < deep_size(copies[0]) / held < 1.25
