"""KnownChains (a chain's name-independent part kept by digest) gives the verdict the
whole work gives: on every lab scenario and the chains the other tests build, for
names that match, miss, hit a wildcard, are IDNA, IP addresses or absent, cold, warm,
a new name on a known chain, and later, when the certificates' dates say otherwise."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import Store

from inspector.chain.cache import deep_size
from inspector.chain.judge import ChainJudge
from inspector.chain.trust import TrustProfile, load_client_profile, load_profile
from inspector.chain.verify import ChainVerdict, KnownChains, chain_digest, verify_chain
from inspector.lab.chains import MARKUP, build_chain_lab
from inspector.lab.pki import DAY, NOW, Issued, make_cert, make_key
from tests.test_chain_bounds import _distinct, _same_name

HOST = "site.lab.test"
NOW_UTC = dt.datetime.now(dt.timezone.utc)


def _profile(name: str, *roots: Issued) -> TrustProfile:
    certs = tuple(r.cert for r in roots)
    return TrustProfile(name, certs, Store(list(certs)))


def _no_san_leaf(issuer: Issued) -> bytes:
    key = make_key()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 90 * DAY)
        .sign(issuer.key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )


def _test_chains() -> tuple[dict[str, tuple[list[bytes], str]], tuple[Issued, Issued], Issued]:
    """The chains tests/test_chain_verify.py, test_chain_bounds.py and
    test_hostile_chains.py judge, built the same way: name -> (DER chain, its host)."""
    long = {"ca": True, "not_before": NOW - 3650 * DAY, "not_after": NOW + 3650 * DAY}
    root = make_cert("Test Root", **long)
    inter = make_cert("Test Intermediate", root, **long)
    leaf = make_cert(HOST, inter, sans=(HOST,))
    unknown = make_cert("Unknown Root", ca=True, not_before=NOW - 3650 * DAY)
    stranger = make_cert("Stranger", ca=True)
    evil = make_cert("x", subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, MARKUP)]),
                     ca=True)
    old_inter = make_cert("Old Intermediate", root, ca=True, not_before=NOW - 900 * DAY,
                          not_after=NOW - 2 * DAY)
    weak_inter = make_cert("Weak Intermediate", root, ca=True, key=make_key("rsa1024"))
    soon = make_cert(HOST, inter, sans=(HOST,), not_after=NOW + 20 * DAY)
    # a root that ends before the chain it signed: only the store's validity changes
    short_root = make_cert("Short Root", ca=True, not_after=NOW + 100 * DAY)
    long_inter = make_cert("Long Intermediate", short_root, ca=True, not_after=NOW + 3000 * DAY)
    long_leaf = make_cert(HOST, long_inter, sans=(HOST,), not_after=NOW + 3000 * DAY)
    copy_key = make_key()
    copy_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Copy CA")])
    copies = [make_cert("Copy CA", ca=True, key=copy_key, subject_name=copy_name) for _ in range(12)]

    def d(*issued: Issued) -> list[bytes]:
        return [i.der for i in issued]

    chains = {
        "good": (d(leaf, inter), HOST),
        "leaf-only": (d(leaf), HOST),
        "reversed": (d(inter, leaf), HOST),
        "with-root": (d(leaf, inter, root), HOST),
        "extra-and-duplicate": (d(leaf, inter, stranger, inter), HOST),
        "served-unknown-root": (d(make_cert(HOST, unknown, sans=(HOST,)), unknown), HOST),
        "self-signed": (d(make_cert(HOST, sans=(HOST,))), HOST),
        "markup-ca": (d(make_cert(HOST, evil, sans=(HOST,)), evil), HOST),
        "expired-leaf-unknown-ca": (d(make_cert(HOST, unknown, sans=(HOST,), not_before=NOW - 90 * DAY,
                                                not_after=NOW - DAY), unknown), HOST),
        "expired-intermediate": (d(make_cert(HOST, old_inter, sans=(HOST,), not_before=NOW - 100 * DAY),
                                   old_inter), HOST),
        "expired-leaf-stranger": (d(make_cert(HOST, inter, sans=(HOST,), not_before=NOW - 90 * DAY,
                                              not_after=NOW - DAY), stranger, inter), HOST),
        "not-yet-valid": (d(make_cert(HOST, inter, sans=(HOST,), not_before=NOW + 10 * DAY,
                                      not_after=NOW + 100 * DAY), inter), HOST),
        "expiring-soon": (d(soon, inter), HOST),
        "root-expires-first": (d(long_leaf, long_inter), HOST),
        "rsa1024-leaf": (d(make_cert(HOST, inter, sans=(HOST,), key=make_key("rsa1024")), inter), HOST),
        "rsa1024-issuer": (d(make_cert(HOST, weak_inter, sans=(HOST,)), weak_inter), HOST),
        "no-san": ([_no_san_leaf(inter), inter.der], HOST),
        "wildcard": (d(make_cert("*.lab.test", inter, sans=("*.lab.test",)), inter), "any.lab.test"),
        "ip": (d(make_cert("ip", inter, sans=("127.0.0.1", "::1")), inter), "127.0.0.1"),
        # SAN entries cryptography reads otherwise than our own name check: a trailing
        # dot, an underscore, upper case; a wildcard beside them
        "odd-sans": (d(make_cert("odd", inter, sans=("Trailing.lab.test.", "under_score.lab.test",
                                                     "*.Wild.lab.test", "CAPS.lab.test")), inter),
                     "trailing.lab.test"),
        "idna": (d(make_cert("idna", inter, sans=("xn--bcher-kva.lab.test",)), inter),
                 "xn--bcher-kva.lab.test"),
        "copies": (d(make_cert(HOST, Issued(copies[0].cert, copy_key), sans=(HOST,)), *copies), HOST),
        "empty": ([], HOST),
        "unparseable": ([leaf.der, b"\x00garbage", inter.der], HOST),
        "truncated": ([leaf.der[:-20]], HOST),
        "cannot-parse-small": ([make_cert("fake.lab.test").der, b"\x30\x03\x02\x01\x00"], "fake.lab.test"),
        "same-name-in-order": (_same_name(8, reverse=False), "fake.lab.test"),
        "same-name-over-budget": (_same_name(48, reverse=True), "fake.lab.test"),
        "distinct-deep": (_distinct(12), "fake.lab.test"),
    }
    return chains, (root, short_root), inter


def _names(host: str) -> list[tuple[str | None, str]]:
    """(SNI, CONNECT host) pairs for a chain whose leaf covers `host`."""
    return [
        (host, host),  # matching
        (None, host),  # no SNI
        ("", host),  # an empty SNI
        ("other.lab.test", host),  # a name the leaf does not cover
        (host, "other.lab.test"),  # the CONNECT host differs
        ("Any.LAB.test.", "any.lab.test"),  # wildcard-shaped, case and a trailing dot
        ("x.wild.lab.test", "x.wild.lab.test"),
        ("a.b.lab.test", "a.b.lab.test"),  # deeper than a wildcard reaches
        ("bücher.lab.test", "bücher.lab.test"),  # IDNA: a U-label
        ("xn--bcher-kva.lab.test", "xn--bcher-kva.lab.test"),
        ("trailing.lab.test", "trailing.lab.test"),
        ("under_score.lab.test", "under_score.lab.test"),  # a name cryptography refuses
        (None, "127.0.0.1"),
        ("::1", "::1"),
        ("127.0.0.1", HOST),
        (MARKUP, "evil.lab.test"),
    ]


def _json(v: ChainVerdict) -> str:
    """The verdict as the record holds it (judge.py): chain object and findings."""
    return json.dumps({"chain": v.to_dict("observed") if v.judged else None,
                       "findings": [f.to_dict() for f in v.findings]}, sort_keys=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    lab = build_chain_lab(tmp_path_factory.mktemp("lab"))
    chains = {f"lab:{n}": (s.chain_der, s.hostname) for n, s in lab.scenarios.items()}
    tests, roots, inter = _test_chains()
    chains.update({f"test:{n}": c for n, c in tests.items()})
    trust = [load_profile("mozilla"), load_profile(str(lab.root_pem), name="root"),
             _profile("lab", *roots)]
    clients = [load_client_profile(f"old-device={lab.old_device_pem}"),
               _profile("intermediates", inter)]
    return chains, trust, clients


def _compare(known: KnownChains, chains, moment: dt.datetime, passes: int = 2,
             names: int | None = None, full: dict | None = None) -> int:
    """Every chain with every name (the first `names`) through `known`, against the
    whole work (its verdicts kept in `full`); pass 1 meets each chain cold, then with
    new names; pass 2 and later meet everything warm."""
    compared, full = 0, ({} if full is None else full)
    for _ in range(passes):
        for label, (chain, host) in chains.items():
            # over the signature budget, every verdict costs ~0.1 s: a few names
            pairs = _names(host)[:3 if "over-budget" in label else names]
            for sni, connect_host in pairs:
                kw = {"sni": sni, "connect_host": connect_host, "now": moment}
                key = (label, sni, connect_host, moment)
                if key not in full:
                    full[key] = _json(verify_chain(chain, trust=known.trust,
                                                   clients=known.clients, **kw))
                assert _json(known.verify(chain, **kw)) == full[key], key
                compared += 1
    return compared


def test_kept_parts_give_the_same_verdicts(corpus):
    chains, trust, clients = corpus
    known = KnownChains(trust, clients)
    compared = _compare(known, chains, NOW_UTC)
    assert compared > 2 * 40 * len(_names(HOST)) and len(chains) > 40
    assert known.misses == len({chain_digest(c) for c, _ in chains.values()})
    assert known.hits == compared - known.misses


def test_kept_parts_follow_the_clock(corpus):
    """The same parts judged in the second after most leaves' notAfter (cryptography
    reads the moment to the second: still valid for it), the second after that
    (expired), 4,000 days later (the lab's CAs expired too), and back: the kept path
    outcomes are keyed by which certificates are valid, not reused across that."""
    chains, trust, clients = corpus
    known, full = KnownChains(trust, clients), {}
    leaves_end = NOW + 365 * DAY  # make_cert's default notAfter: most leaves end then
    for moment in (NOW_UTC, leaves_end + dt.timedelta(seconds=0.5),
                   leaves_end + dt.timedelta(seconds=1.5), NOW_UTC + 4000 * DAY, NOW_UTC):
        _compare(known, chains, moment, passes=1, names=6, full=full)


def test_without_profiles(corpus):
    chains, _, _ = corpus
    _compare(KnownChains([], []), chains, NOW_UTC, passes=1)


def test_a_new_name_on_a_known_chain_does_no_path_building(corpus, monkeypatch):
    """The point of keeping parts: a known chain with a new name runs cryptography's
    path builder not once (the spy counts calls to its verifier)."""
    chains, trust, clients = corpus
    from inspector.chain import verify

    known = KnownChains(trust, clients)
    chain, host = chains["lab:good"]
    known.verify(chain, sni=host, connect_host=host, now=NOW_UTC)
    calls = []
    real = verify.PolicyBuilder

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real(), name)

    monkeypatch.setattr(verify, "PolicyBuilder", Spy)
    wildcard_sibling = "other." + host.partition(".")[2]
    known.verify(chain, sni=wildcard_sibling, connect_host=wildcard_sibling, now=NOW_UTC)
    known.verify(chain, sni=None, connect_host="127.0.0.1", now=NOW_UTC)
    assert "time" not in calls  # only the probe name's check builds a policy, none verifies


def test_kept_parts_are_bounded_in_bytes(corpus):
    chains, trust, clients = corpus
    known = KnownChains(trust, clients, max_bytes=200_000)
    for chain, host in chains.values():
        known.verify(chain, sni=host, connect_host=host, now=NOW_UTC)
    known.settle()
    assert 0 < known.held_bytes <= 200_000 and len(known) < len(chains)
    small = KnownChains(trust, clients, max_bytes=1000)  # smaller than any part
    v = small.verify(chains["lab:good"][0], sni=HOST, connect_host=HOST, now=NOW_UTC)
    small.settle()
    assert v.judged and len(small) == 0  # judged, not kept


def test_a_parts_weight_counts_what_it_holds(corpus):
    """A part's weight grows with what it remembers (path outcomes, anchors): weighed
    again after a verdict that made it remember more."""
    chains, trust, clients = corpus
    known = KnownChains(trust, clients)
    chain, host = chains["lab:good"]
    known.verify(chain, sni=host, connect_host=host, now=NOW_UTC)
    assert known.held_bytes == 0  # weighed after the answer, by settle or the next verdict
    known.settle()
    first = known.held_bytes
    assert first >= deep_size(chain)
    known.verify(chain, sni=host, connect_host=host, now=NOW_UTC + 4000 * DAY)
    known.settle()
    assert known.held_bytes > first


def test_the_proxys_verdict_cache_tells_chains_with_the_same_bytes_apart():
    """[a+b, c] and [a, b+c] are two chains: the proxy's verdict cache must not answer
    one with the other's verdict (their DER joined is the same)."""
    a = make_cert(HOST).der
    one, two = [a + b"\x00", b"\x01"], [a, b"\x00\x01"]
    judge = ChainJudge([], [], probing=False)

    async def both():
        try:
            return (await judge._verify(one, HOST, HOST), await judge._verify(two, HOST, HOST))
        finally:
            judge.close()

    first, second = asyncio.run(both())
    assert "#0, #1" in first.findings[0].message
    assert "(#1;" in second.findings[0].message


def test_kept_anchors_charge_the_signature_budget_again():
    """A root looked up above the served walk is kept with the checks it cost, and
    charged again on every use: a verdict that looks twice goes over the bound as
    the whole work does. Here: 501 roots carry the name of the leaf's missing issuer,
    the leaf has expired, so the anchor is looked up for today and for the leaf's
    last valid day (1,002 checks, over the 1,000)."""
    key = make_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Missing CA")])
    decoys = [make_cert("Missing CA", ca=True, key=key, subject_name=name) for _ in range(501)]
    missing = make_cert("Missing CA", ca=True, subject_name=name)
    leaf = make_cert(HOST, missing, sans=(HOST,), not_before=NOW - 90 * DAY, not_after=NOW - DAY)
    trust = [_profile("decoys", *decoys)]
    kw = {"sni": HOST, "connect_host": HOST, "now": NOW_UTC}
    full = verify_chain([leaf.der], trust=trust, clients=[], **kw)
    assert not full.judged and "signature checks" in full.findings[0].message
    assert _json(KnownChains(trust, []).verify([leaf.der], **kw)) == _json(full)
