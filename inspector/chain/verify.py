"""The chain verdict: the certificates a server sent in, what its clients conclude out.

Pure: DER bytes, trust profiles and a clock in; a `ChainVerdict` (findings, and the
record's "chain" object of design.md) out. No I/O, no mitmproxy.

A served chain is looked at three ways:
- per profile, by cryptography's path builder: what a modern client concludes
  (trusted-first, any order, expired alternatives skipped);
- along the served walk: the issuer of each certificate taken from the served list
  first, as OpenSSL 1.0.x, old GnuTLS and old Android build it;
- by its structure: order, extra and root certificates, algorithms, dates.

cryptography's error texts are not diagnoses (one text covers a missing intermediate,
an unknown root and a self-signed leaf), so every failure is re-explained here from
the served chain. When no `--trust` profile accepts the chain, the finding names the
cause (`self-signed`, `incomplete-chain`, `expired`, `hostname-mismatch`,
`weak-signature`, ...); `untrusted` is for causes no more specific code describes.
Messages carry certificate subjects verbatim: escaping is the display's job.

A verdict is the chain's part (parsing, the served walk, its signature checks, the
roots above it, cryptography's path per profile) and the name part (SNI and CONNECT
host): `verify_chain` does both, `KnownChains` keeps the chain's part by digest so a
known chain seen with a new name does the name part only, with the same verdict.

The chain comes from a stranger, so the work spent on it is bounded: more than
MAX_CERTIFICATES certificates, or a served walk that needs more than
MAX_SIGNATURE_CHECKS signature checks (600 certificates with one name, served in
reverse, need ~180,000: 21 s), is not judged; the verdict says so (`judged` False).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

from cachetools import LRUCache
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ObjectIdentifier
from cryptography.x509.oid import SignatureAlgorithmOID as SIG
from cryptography.x509.verification import PolicyBuilder, VerificationError

from inspector.chain.cache import deep_size
from inspector.chain.trust import TrustProfile, era, spki, validity_bounds
from inspector.findings.codes import ERROR, SEVERITY_RANK, Finding, finding
from inspector.observe.sni import ip_literal, normalise_host
from inspector.records.schema import Certificate, Chain, ChainSource

T = TypeVar("T")

MAX_DEPTH = 8  # intermediates the path builder may stack; real chains need 1-3
MAX_CERTIFICATES = 100  # real chains have 2-4; more is a broken or hostile server
# One costs 0.07 ms (EC P-256) to ~1 ms (RSA 16384); an honest chain needs about twice
# its length, where one name served in reverse order needs n²/2.
MAX_SIGNATURE_CHECKS = 1000
LISTED = 5  # names or certificates spelled out in one message
# What KnownChains may hold: a usual chain's part weighs 20-60 KB, so thousands of chains.
KNOWN_BYTES = 32 * 2**20
RUST_PER_DER_BYTE = 10  # cryptography holds 8-9x a parsed certificate's DER (measured, RSS)

LEGACY_CLIENTS = "OpenSSL 1.0.x, GnuTLS < 3.6.14, Android <= 5, Java <= 8u51"

# OpenSSL's names, so the record reads like `openssl x509 -text`.
SIGNATURE_NAMES = {
    SIG.RSA_WITH_MD5: "md5WithRSAEncryption",
    SIG.RSA_WITH_SHA1: "sha1WithRSAEncryption",
    SIG.RSA_WITH_SHA224: "sha224WithRSAEncryption",
    SIG.RSA_WITH_SHA256: "sha256WithRSAEncryption",
    SIG.RSA_WITH_SHA384: "sha384WithRSAEncryption",
    SIG.RSA_WITH_SHA512: "sha512WithRSAEncryption",
    SIG.RSASSA_PSS: "rsassaPss",
    SIG.ECDSA_WITH_SHA1: "ecdsa-with-SHA1",
    SIG.ECDSA_WITH_SHA224: "ecdsa-with-SHA224",
    SIG.ECDSA_WITH_SHA256: "ecdsa-with-SHA256",
    SIG.ECDSA_WITH_SHA384: "ecdsa-with-SHA384",
    SIG.ECDSA_WITH_SHA512: "ecdsa-with-SHA512",
    SIG.DSA_WITH_SHA1: "dsaWithSHA1",
    SIG.DSA_WITH_SHA256: "dsa_with_SHA256",
    SIG.ED25519: "ED25519",
    SIG.ED448: "ED448",
}
_MD2_RSA = ObjectIdentifier("1.2.840.113549.1.1.2")
_SHA1_RSA_OIW = ObjectIdentifier("1.3.14.3.2.29")
WEAK_SIGNATURES = {
    SIG.RSA_WITH_MD5, SIG.RSA_WITH_SHA1, SIG.ECDSA_WITH_SHA1, SIG.DSA_WITH_SHA1,
    _MD2_RSA, _SHA1_RSA_OIW,
}


@dataclass(frozen=True)
class CertificateInfo:
    """One served certificate as the record shows it."""

    subject: str
    issuer: str | None
    not_before: str | None
    not_after: str | None
    sha256: str
    key: str | None
    signature: str | None

    def to_dict(self, in_path: bool) -> Certificate:
        return {"subject": self.subject, "issuer": self.issuer, "not_before": self.not_before,
                "not_after": self.not_after, "sha256": self.sha256, "key": self.key,
                "signature": self.signature, "in_path": in_path}


@dataclass(frozen=True)
class ProfileResult:
    name: str
    kind: str  # "trust" (a --trust profile) or "client" (a --client profile)
    trusted: bool
    error: str | None  # why this profile rejects the chain, in plain words
    path: tuple[str, ...] = ()  # sha256 of the chain it validated, leaf first


@dataclass(frozen=True)
class ChainVerdict:
    certificates: tuple[CertificateInfo, ...]
    profiles: tuple[ProfileResult, ...]
    findings: list[Finding]
    judged: bool = True  # False: over the bounds, `findings` says why; no chain object

    @property
    def path(self) -> tuple[str, ...]:
        """The path validated by the first profile that validates one (empty if none)."""
        return next((p.path for p in self.profiles if p.path), ())

    def to_dict(self, source: ChainSource) -> Chain:
        """The record's "chain" object; `source` is observed, probe or intercept."""
        path = self.path
        out: Chain = {
            "source": source,
            "certificates": [c.to_dict(c.sha256 in path) for c in self.certificates],
            "profiles": {
                p.name: {"trusted": p.trusted, "error": p.error, "kind": p.kind}
                for p in self.profiles
            },
        }
        if path:
            out["path"] = list(path)
        return out


def verify_chain(
    chain_der: list[bytes],
    *,
    sni: str | None,
    connect_host: str,
    trust: list[TrustProfile],
    clients: list[TrustProfile],
    now: dt.datetime,
    expiring_days: int = 30,
) -> ChainVerdict:
    """The verdict on `chain_der` (leaf first, as served) for a client that sent `sni`
    in a tunnel to `connect_host`, judged by the `trust` and `clients` profiles at `now`
    (UTC if naive). The whole work, nothing remembered: `KnownChains` is the same
    verdict with a chain's name-independent part kept between calls."""
    return _Analysis(_Part(chain_der), sni, connect_host, trust, clients, now,
                     expiring_days, remember=False).verdict()


def chain_digest(chain_der: list[bytes]) -> bytes:
    """SHA-256 over the certificates in served order, each prefixed by its length:
    [a+b, c] and [a, b+c] are different chains (unparseable bytes need not be DER)."""
    h = hashlib.sha256()
    for der in chain_der:
        h.update(len(der).to_bytes(8, "big"))
        h.update(der)
    return h.digest()


class KnownChains:
    """Verdicts with the name-independent part of each chain kept, by `chain_digest`.

    A verdict is a chain's part (parsing, the served walk and its signature checks,
    the trust anchors above it, cryptography's path per profile) and a name part (the
    probe name, hostname checks and every text that names the SNI or CONNECT host).
    The kept part is exactly what depends only on what it is keyed by:
    - the DER certificates in served order (the digest);
    - the profiles this object was made with (fixed: the part is only ever judged
      against them, remembered by the profile object's id while this object holds it);
    - for a path outcome, also the validity of every certificate cryptography may look
      at (the served ones and the profile's roots) at the moment, and whether the probe
      name matches the leaf by cryptography's rules: cryptography's verifier uses the
      name for nothing else (policy/mod.rs: `Subject::matches` in the EE
      subjectAltName check), so two names the leaf covers build the same path.
    Everything depending on the clock beyond validity (days left) or on the names is
    judged again on every call, so a known chain with a new SNI costs the name part.
    Bounded in bytes (cache.deep_size plus the parsed certificates cryptography holds
    outside Python), least recently used first out.
    """

    def __init__(self, trust: list[TrustProfile], clients: list[TrustProfile],
                 max_bytes: int = KNOWN_BYTES) -> None:
        self.trust = list(trust)
        self.clients = list(clients)
        self._parts: LRUCache[bytes, _Part] = LRUCache(maxsize=max_bytes, getsizeof=_part_size)
        self.hits = 0
        self.misses = 0
        self._pending: tuple[bytes, _Part] | None = None  # judged, not weighed yet

    @property
    def held_bytes(self) -> int:
        """What the kept parts weigh (see _part_size), at most max_bytes."""
        return int(self._parts.currsize)

    def __len__(self) -> int:
        return len(self._parts)

    def verify(self, chain_der: list[bytes], *, sni: str | None, connect_host: str,
               now: dt.datetime, expiring_days: int = 30) -> ChainVerdict:
        """`verify_chain` with this object's profiles, the chain's part kept."""
        self.settle()
        key = chain_digest(chain_der)
        part = self._parts.get(key)
        if part is None:
            self.misses += 1
            part = _Part(chain_der)
        else:
            self.hits += 1
        verdict = _Analysis(part, sni, connect_host, self.trust, self.clients, now,
                            expiring_days, remember=True).verdict()
        if part.grew:  # new, or it remembered more: to be weighed again
            self._pending = (key, part)
        return verdict

    def settle(self) -> None:
        """Weigh and keep the last verdict's part if it is new or grew: deep_size costs
        ~0.3 ms, so the worker calls this after sending its answer (the next `verify`
        does it otherwise)."""
        if self._pending is None:
            return
        key, part = self._pending
        self._pending = None
        part.grew = False
        try:
            self._parts[key] = part
        except ValueError:
            pass  # larger than the whole budget: judged, not kept


def _part_size(part: _Part) -> int:
    # cryptography keeps each parsed certificate (its DER and decoded fields) outside
    # Python's view; the paths it returns are the certificates it was handed.
    return deep_size(part) + RUST_PER_DER_BYTE * part.der_bytes


def _too_large(count: int, why: str) -> ChainVerdict:
    return ChainVerdict((), (), [finding(
        "probe-failed",
        f"chain too large to judge: {count} certificates ({why})",
        "real chains have 2 to 4 certificates: serve the leaf and its intermediates only; "
        "clients cap the chain's size too (OpenSSL at 100 KB)",
    )], judged=False)


# --- parsing ---------------------------------------------------------------------


def _parse(der: bytes) -> x509.Certificate | None:
    try:
        cert = x509.load_der_x509_certificate(der)
        # cryptography decodes names, extensions and the key lazily: touch them here so
        # a malformed one makes the certificate unparseable instead of raising later.
        cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
        cert.extensions, cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None
    return cert


def _info(der: bytes, cert: x509.Certificate | None) -> CertificateInfo:
    sha256 = hashes.Hash(hashes.SHA256())
    sha256.update(der)
    digest = sha256.finalize().hex()
    if cert is None:
        return CertificateInfo("unparseable", None, None, None, digest, None, None)
    return CertificateInfo(
        cert.subject.rfc4514_string(),
        cert.issuer.rfc4514_string(),
        _stamp(cert.not_valid_before_utc),
        _stamp(cert.not_valid_after_utc),
        digest,
        _key_text(cert.public_key()),
        _signature_name(cert),
    )


def _unusable(certs: list[x509.Certificate | None]) -> Finding | None:
    if not certs:
        return finding(
            "untrusted",
            "the server sent no certificate",
            "configure a certificate on the server, or check that the tunnel reached the "
            "TLS port you meant",
        )
    bad = [i for i, c in enumerate(certs) if c is None]
    if not bad:
        return None
    which = ", ".join(f"#{i}" for i in bad[:LISTED])
    return finding(
        "untrusted",
        f"the server sent a certificate that cannot be parsed ({which}; #0 is the leaf)",
        f"replace certificate {which} in the server's chain file: clients reject a chain "
        "they cannot parse",
    )


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _day(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _key_text(key) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448"
    return type(key).__name__


def _weak_key(key) -> bool:
    if isinstance(key, (rsa.RSAPublicKey, dsa.DSAPublicKey)):
        return key.key_size < 2048
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.key_size < 256
    return False


def _weak_signature(cert: x509.Certificate) -> bool:
    return cert.signature_algorithm_oid in WEAK_SIGNATURES


def _signature_name(cert: x509.Certificate) -> str:
    oid = cert.signature_algorithm_oid
    return SIGNATURE_NAMES.get(oid, oid.dotted_string)


def _valid_at(cert: x509.Certificate, moment: dt.datetime) -> bool:
    return cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc


class _OverBudget(Exception):
    """The chain needs more signature checks than one verdict may spend."""


class _Budget:
    """The signature checks one verdict may still spend."""

    def __init__(self, checks: int) -> None:
        self.left = checks

    def issued_by(self, child: x509.Certificate, issuer: x509.Certificate) -> bool:
        """Whether `issuer` names and signed `child`; _OverBudget past the bound."""
        if child.issuer != issuer.subject:
            return False  # the cheap test first: most candidates fail on the name
        self.left -= 1
        if self.left < 0:
            raise _OverBudget
        return _signed_by(child, issuer)

    def issuer_in(self, cert: x509.Certificate, pool) -> x509.Certificate | None:
        return next((c for c in pool if self.issued_by(cert, c)), None)

    def spend(self, checks: int) -> None:
        """Charge checks made in an earlier verdict: over the bound exactly when
        making them again would be."""
        self.left -= checks
        if self.left < 0:
            raise _OverBudget


def _signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer`'s key signed `child`, SHA-1 and MD5 signatures included.

    cryptography's `verify_directly_issued_by` refuses legacy hashes, and chains signed
    with them are exactly the ones worth explaining, so the signature is checked here.
    """
    key, signature, tbs = issuer.public_key(), child.signature, child.tbs_certificate_bytes
    try:
        digest = child.signature_hash_algorithm
        if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            key.verify(signature, tbs)
        elif digest is None:
            return False  # an Ed25519/Ed448 signature under another key type: verify would raise TypeError
        elif isinstance(key, rsa.RSAPublicKey):
            scheme = child.signature_algorithm_parameters or padding.PKCS1v15()
            if isinstance(scheme, ec.ECDSA):
                return False  # an ECDSA signature under an RSA key: verify would raise TypeError
            key.verify(signature, tbs, scheme, digest)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, tbs, ec.ECDSA(digest))
        elif isinstance(key, dsa.DSAPublicKey):
            key.verify(signature, tbs, digest)
        else:
            return False
    except (InvalidSignature, TypeError, ValueError, UnsupportedAlgorithm):
        return False  # a mismatched key type or an unknown algorithm is not a signature
    return True


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _label(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(a certificate with an empty subject)"


def _has_aia_issuer(cert: x509.Certificate) -> bool:
    try:
        aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return False
    return any(d.access_method == AuthorityInformationAccessOID.CA_ISSUERS for d in aia)


# --- names -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Names:
    """The names a leaf covers (its subjectAltName; the common name counts for nothing)."""

    dns: tuple[str, ...]
    ips: tuple[str, ...]
    present: bool
    san_dns: tuple[str, ...] = ()  # as written in the certificate, for cryptography's rules
    san_ips: tuple[object, ...] = ()

    @classmethod
    def of(cls, leaf: x509.Certificate) -> _Names:
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return cls((), (), False)
        san_dns = tuple(san.get_values_for_type(x509.DNSName))
        san_ips = tuple(san.get_values_for_type(x509.IPAddress))
        dns = tuple(n.lower().rstrip(".") for n in san_dns)
        ips = tuple(str(ip) for ip in san_ips)
        return cls(dns, ips, True, san_dns, san_ips)

    def match_for_cryptography(self, probe: x509.DNSName | x509.IPAddress) -> bool:
        """Whether cryptography's verifier finds `probe` in the subjectAltName: its
        `Subject::matches` (policy/mod.rs) with `DNSPattern` and `DNSName` (types.rs).
        The one way the name given to its path builder changes what it returns."""
        if isinstance(probe, x509.IPAddress):
            # IPAddress::from_bytes: 4 or 16 bytes; a network (8 or 32) matches nothing
            return any(isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address))
                       and ip == probe.value for ip in self.san_ips)
        name = probe.value
        return any(_dns_pattern_matches(pattern, name) for pattern in self.san_dns)

    def covers(self, host: str) -> bool:
        ip = _ip_literal(host)
        if ip is not None:
            return ip in self.ips
        name = _normalise_host(host)
        if name is None:
            return False
        parent = name.partition(".")[2]
        return any(d == name or (d.startswith("*.") and d[2:] == parent) for d in self.dns)

    def listing(self) -> str:
        names = self.dns + self.ips
        if not names:
            return "no names"
        more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
        return ", ".join(names[:LISTED]) + more

    def candidates(self, target: str) -> list[str]:
        """Names to hand the path builder, the target first when the leaf covers it."""
        own = [("a" + d[1:]) if d.startswith("*.") else d for d in self.dns] + list(self.ips)
        return ([target] if self.covers(target) else []) + own


# Pure functions of names a verdict asks about several times each (~10 us a call).
_ip_literal = lru_cache(maxsize=1024)(ip_literal)
_normalise_host = lru_cache(maxsize=1024)(normalise_host)

_LDH = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def _dns_name_valid(value: str) -> bool:
    """cryptography's `DNSName::new`: 1-253 characters, labels of 1-63 ASCII letters,
    digits and inner hyphens."""
    if not value or len(value.encode("utf-8", "surrogatepass")) > 253:
        return False
    return all(
        label and len(label) <= 63 and label[0] != "-" and label[-1] != "-"
        and all(c in _LDH for c in label)
        for label in value.split(".")
    )


def _dns_pattern_matches(pattern: str, name: str) -> bool:
    """cryptography's `DNSPattern::new(pattern).matches(name)`: an exact name, or `*.`
    and a name matching the parent of `name`; ASCII case-insensitive."""
    if pattern.startswith("*."):
        parent = name.partition(".")[2]
        return (_dns_name_valid(pattern[2:]) and _dns_name_valid(parent)
                and pattern[2:].lower() == parent.lower())
    return _dns_name_valid(pattern) and _dns_name_valid(name) and pattern.lower() == name.lower()


def _general_name(host: str) -> x509.DNSName | x509.IPAddress:
    ip = _ip_literal(host)
    if ip is not None:
        return x509.IPAddress(ipaddress.ip_address(ip))
    return x509.DNSName(_normalise_host(host) or host)


def _same_host(a: str, b: str) -> bool:
    return (_ip_literal(a) or _normalise_host(a) or a) == (_ip_literal(b) or _normalise_host(b) or b)


# --- the served chain ----------------------------------------------------------------


class _Part:
    """A chain's verdict before names and the clock: the parsed certificates, the
    served walk, and (kept when `KnownChains` remembers) the trust anchor above the
    walk per profile and cryptography's path outcomes (see KnownChains for keys)."""

    def __init__(self, chain_der: list[bytes]) -> None:
        self.count = len(chain_der)
        self.der_bytes = sum(map(len, chain_der))
        self.grew = True  # not weighed since it last remembered something
        self.too_large: str | None = None  # why the chain is not judged
        self.infos: tuple[CertificateInfo, ...] = ()
        self.unusable: Finding | None = None
        self.served: _Served | None = None
        self.walk_checks = 0  # signature checks the served walk spent
        # id(profile) -> (the anchor above the walk or None, signature checks spent)
        self.anchors: dict[int, tuple[x509.Certificate | None, int]] = {}
        # (id(profile), validity era, probe matched) -> path, or cryptography's error
        self.outcomes: dict[tuple, list[x509.Certificate] | str] = {}
        # (id(certificate), fact) -> (the certificate, kept so its id stays its own; value)
        self.facts: dict[tuple[int, str], tuple[x509.Certificate, Any]] = {}
        if self.count > MAX_CERTIFICATES:
            self.too_large = f"the verdict covers chains of up to {MAX_CERTIFICATES}"
            return
        certs = [_parse(der) for der in chain_der]
        self.infos = tuple(_info(der, cert) for der, cert in zip(chain_der, certs))
        self.unusable = _unusable(certs)
        if self.unusable is not None:
            return
        budget = _Budget(MAX_SIGNATURE_CHECKS)
        try:
            # all parsed: _unusable found none missing
            self.served = _Served([c for c in certs if c is not None], budget)
        except _OverBudget:
            self.too_large = (
                f"finding the served path takes over {MAX_SIGNATURE_CHECKS} signature checks"
            )
        self.walk_checks = MAX_SIGNATURE_CHECKS - budget.left

    def fact(self, cert: x509.Certificate, what: str, make: Callable[[x509.Certificate], T]) -> T:
        """`make(cert)`, once per certificate and fact (a pure function of the certificate)."""
        key = (id(cert), what)
        kept = self.facts.get(key)
        if kept is None:
            kept = self.facts[key] = (cert, make(cert))
            self.grew = True
        return kept[1]


class _Served:
    """The parsed served chain and what follows from it alone."""

    def __init__(self, certs: list[x509.Certificate], budget: _Budget) -> None:
        self.certs = certs
        self.leaf = certs[0]
        self.self_signed = [budget.issued_by(c, c) for c in certs]
        self.walk = self._walk(budget)
        self.index: dict[str, int] = {}  # sha256 -> first served position
        for i, c in enumerate(certs):
            self.index.setdefault(_fingerprint(c), i)
        self.names = _Names.of(self.leaf)
        self.pool = self.intermediates()  # what the path builder is handed
        self.bounds = validity_bounds(certs)

    def _walk(self, budget: _Budget) -> list[int]:
        """Served positions of the path a legacy client builds: from the leaf, each
        certificate's issuer is looked up among the served certificates first."""
        path, used = [0], {0}
        while not self.self_signed[path[-1]]:
            current = self.certs[path[-1]]
            nxt = next(
                (
                    i
                    for i, c in enumerate(self.certs)
                    if i not in used and budget.issued_by(current, c)
                ),
                None,
            )
            if nxt is None:
                break
            path.append(nxt)
            used.add(nxt)  # each served certificate once: the walk ends within len(certs)
        return path

    def intermediates(self) -> list[x509.Certificate]:
        """The served certificates after the leaf, one per (subject, key).

        Several certificates with one subject and key are all valid issuers of the same
        children, and the path builder tries every combination: 4 copies take ~30 s at
        depth 8. One of each keeps its work linear in the chain's length.
        """
        seen, out = set(), []
        for cert in self.certs[1:]:
            key = (cert.subject, spki(cert))
            if key not in seen:
                seen.add(key)
                out.append(cert)
        return out

    def leaf_moment(self, now: dt.datetime) -> dt.datetime:
        """`now`, or the closest moment the leaf is valid: to judge the rest of the chain."""
        leaf = self.leaf
        return min(max(now, leaf.not_valid_before_utc), leaf.not_valid_after_utc)

    def top(self) -> int:
        return self.walk[-1]


# A certificate with its position in the served chain (None: not served, a store's root).
_Positioned = tuple[int | None, x509.Certificate]


@dataclass(frozen=True)
class _Diagnosis:
    code: str
    message: str
    hint: str


@dataclass(frozen=True)
class _Run:
    profile: TrustProfile
    kind: str
    path: list[x509.Certificate] | None
    problem: _Diagnosis | None

    def result(self, fingerprint: Callable[[x509.Certificate], str]) -> ProfileResult:
        path = tuple(fingerprint(c) for c in self.path or ())
        error = self.problem.message if self.problem else None
        return ProfileResult(self.profile.name, self.kind, self.problem is None, error, path)


class _Analysis:
    """One verdict: a chain's part judged for one SNI, CONNECT host and moment."""

    def __init__(
        self,
        part: _Part,
        sni: str | None,
        connect_host: str,
        trust: list[TrustProfile],
        clients: list[TrustProfile],
        now: dt.datetime,
        expiring_days: int,
        *,
        remember: bool,
    ) -> None:
        self.part = part
        self.remember = remember  # keep and reuse the part's anchors and path outcomes
        self.sni = sni or None
        self.connect_host = connect_host
        self.target = self.sni or connect_host  # the name a client checks the leaf against
        self.trust = trust
        self.clients = clients
        self.now = now if now.tzinfo else now.replace(tzinfo=dt.timezone.utc)
        self.expiring = dt.timedelta(days=expiring_days)

    def verdict(self) -> ChainVerdict:
        part = self.part
        if part.served is None:
            if part.too_large is not None:
                return _too_large(part.count, part.too_large)
            assert part.unusable is not None  # a part has a served chain, or why not
            kinds = [(p, "trust") for p in self.trust] + [(p, "client") for p in self.clients]
            profiles = tuple(ProfileResult(p.name, kind, False, part.unusable.message)
                             for p, kind in kinds)
            return ChainVerdict(part.infos, profiles, [part.unusable])
        self.served = part.served
        self.names = self.served.names
        self.intermediates = self.served.pool
        self.budget = _Budget(MAX_SIGNATURE_CHECKS - part.walk_checks)
        try:
            self.probe = self._probe_name()
            # cryptography's path builder depends on the probe name through this alone
            self.matched = self.names.match_for_cryptography(self.probe)
            return ChainVerdict(part.infos, *self.conclude())
        except _OverBudget:
            why = f"finding the served path takes over {MAX_SIGNATURE_CHECKS} signature checks"
            return _too_large(part.count, why)

    def _probe_name(self) -> x509.DNSName | x509.IPAddress:
        """A name the leaf covers, so the path builder judges the chain; names are
        judged separately (hostname-mismatch) and for both SNI and CONNECT host."""
        fallback = x509.DNSName("no-usable-name.invalid")  # the builder reports the leaf's names
        profiles = self.trust + self.clients
        if not profiles:
            return fallback
        for candidate in self.names.candidates(self.target):
            subject = _general_name(candidate)
            try:
                PolicyBuilder().store(profiles[0].store).build_server_verifier(subject)
            except ValueError:
                continue  # a name cryptography refuses (underscore, bad label): the next
            return subject
        return fallback

    def _validate(self, profile: TrustProfile, moment: dt.datetime) -> list[x509.Certificate] | str:
        """The validated path, or cryptography's reason it found none."""
        # cryptography reads the moment to the second (asn1 DateTime: a leaf is still
        # valid 0.99 s after its notAfter); at that second, the eras of the served
        # certificates and the profile's roots pin every validity it may look at.
        second = moment.replace(microsecond=0)
        key = (id(profile), self.matched, era(self.served.bounds, second),
               era(profile.bounds, second))
        outcomes = self.part.outcomes
        if self.remember and key in outcomes:
            return outcomes[key]
        verifier = (
            PolicyBuilder()
            .store(profile.store)
            .time(moment)
            .max_chain_depth(MAX_DEPTH)
            .build_server_verifier(self.probe)
        )
        out: list[x509.Certificate] | str
        try:
            out = verifier.verify(self.served.leaf, self.intermediates)
        except VerificationError as e:
            out = str(e)
        if self.remember:
            if len(outcomes) >= 4 * len(self.trust + self.clients):
                outcomes.clear()  # eras of moments long past: 2 moments x 2 matches each
            outcomes[key] = out
            self.part.grew = True
        return out

    def _anchor(self, profile: TrustProfile) -> x509.Certificate | None:
        """The profile's root that signed the top of the served walk, if any."""
        kept = self.part.anchors.get(id(profile)) if self.remember else None
        if kept is not None:
            self.budget.spend(kept[1])
            return kept[0]
        top = self.served.certs[self.served.top()]
        left = self.budget.left
        anchor = self.budget.issuer_in(top, profile.issuers_of(top))
        if self.remember:
            self.part.anchors[id(profile)] = (anchor, left - self.budget.left)
            self.part.grew = True
        return anchor

    # Facts of one certificate, kept in the part: a subject's text alone costs ~15 us
    # (cryptography decodes the name on every access), a fingerprint ~7 us.

    def _label(self, cert: x509.Certificate) -> str:
        return self.part.fact(cert, "label", _label)

    def _fingerprint(self, cert: x509.Certificate) -> str:
        return self.part.fact(cert, "sha256", _fingerprint)

    def _key(self, cert: x509.Certificate) -> tuple[str, bool]:
        """(the key as the record names it, whether it is weak)"""
        return self.part.fact(cert, "key", lambda c: (_key_text(c.public_key()),
                                                       _weak_key(c.public_key())))

    def _run(self, profile: TrustProfile, kind: str) -> _Run:
        path = self._validate(profile, self.now)
        if isinstance(path, str):
            return _Run(profile, kind, None, self._diagnose(profile, path, self.now))
        if not self.names.covers(self.target):
            return _Run(profile, kind, path, self._name_problem())
        return _Run(profile, kind, path, None)

    # -- the verdict --

    def conclude(self) -> tuple[tuple[ProfileResult, ...], list[Finding]]:
        trust_runs = [self._run(p, "trust") for p in self.trust]
        client_runs = [self._run(p, "client") for p in self.clients]
        trusted_path = next((r.path for r in trust_runs if r.path), None)
        path = trusted_path or next((r.path for r in client_runs if r.path), None) or []

        causes = [] if trusted_path or not self.trust else self._trust_failures(trust_runs)
        failing = {d.code for d in causes}
        out = self._leaf_dates() + self._name_findings() + self._weak(path, failing)
        emitted = {f.code for f in out}
        out += [finding(d.code, d.message, d.hint, ERROR) for d in causes if d.code not in emitted]
        if trusted_path:
            out += self._expired_in_chain()
        out += [
            finding(
                "client-fails",
                f"clients with the {r.profile.name} trust store reject the chain: "
                f"{r.problem.message}",
                f"for {r.profile.name}: {r.problem.hint}",
            )
            for r in client_runs
            if r.problem
        ]
        out += self._order() + self._anchors() + self._extra(path) + self._expiring_soon(path)
        out.sort(key=lambda f: -SEVERITY_RANK[f.severity])  # stable: errors first
        return tuple(r.result(self._fingerprint) for r in trust_runs + client_runs), out

    def _trust_failures(self, runs: list[_Run]) -> list[_Diagnosis]:
        """Why no --trust profile validates (`runs` all failed), once per distinct cause.

        An expired or not-yet-valid leaf hides everything behind it, so the chain is
        judged again at a moment the leaf is valid: if it validates then, the leaf's
        dates are the whole story.
        """
        moment = self.served.leaf_moment(self.now)
        problems = [r.problem for r in runs if r.problem is not None]  # all: every run failed
        if moment != self.now:
            problems = []
            for profile in self.trust:
                path = self._validate(profile, moment)
                if not isinstance(path, str):
                    return []
                problems.append(self._diagnose(profile, path, moment))
        return list({(d.code, d.message): d for d in problems}.values())

    # -- diagnoses: cryptography's error text plus the served chain, in plain words --

    def _diagnose(self, profile: TrustProfile, error: str, moment: dt.datetime) -> _Diagnosis:
        text = error.lower()
        if "not valid at validation time" in text:
            return self._dates_problem(profile, moment)
        if "forbidden signature algorithm" in text:
            return self._weak_signature_problem(profile)
        if "too weak" in text:
            return self._weak_key_problem(profile)
        missing_extension = "missing required extension" in text
        if "subjectaltname" in text or (missing_extension and not self.names.present):
            return self._name_problem()
        if missing_extension:
            return _Diagnosis(
                "untrusted",
                "a CA certificate in the path lacks an extension clients require "
                "(basicConstraints or keyUsage)",
                "ask the CA for its current intermediate certificates and serve those",
            )
        return self._structure_problem(profile, error)

    def _candidate_path(self, profile: TrustProfile) -> list[_Positioned]:
        """The served walk and the profile's root above it: (served position or None, cert)."""
        walk: list[_Positioned] = [(i, self.served.certs[i]) for i in self.served.walk]
        top = self.served.top()
        if self.served.self_signed[top]:
            return walk
        anchor = self._anchor(profile)
        return walk + ([(None, anchor)] if anchor is not None else [])

    def _dates_problem(self, profile: TrustProfile, moment: dt.datetime) -> _Diagnosis:
        for position, cert in self._candidate_path(profile):
            if _valid_at(cert, moment):
                continue
            if position == 0:
                return self._leaf_date_problem(moment)
            expired = cert.not_valid_after_utc < moment
            when = (
                f"expired on {_day(cert.not_valid_after_utc)}"
                if expired
                else f"is not valid before {_day(cert.not_valid_before_utc)}"
            )
            if position is None:
                return _Diagnosis(
                    "untrusted",
                    f"the trust store's root {self._label(cert)} {when}",
                    "the client needs an updated trust store, or the server a chain to a root "
                    "the client holds",
                )
            return _Diagnosis(
                "untrusted",
                f"the path to the trust store's root goes through {self._label(cert)} "
                f"(certificate #{position}), which {when}",
                f"replace or remove {self._label(cert)} in the server's chain file: serve the leaf "
                "and the CA's current intermediate only",
            )
        return _Diagnosis(
            "untrusted",
            "every path to a root of the trust store needs a certificate outside its "
            "validity period",
            "serve the leaf and the CA's current intermediate only",
        )

    def _leaf_date_problem(self, moment: dt.datetime) -> _Diagnosis:
        leaf = self.served.leaf
        if leaf.not_valid_after_utc < moment:
            return _Diagnosis(
                "expired",
                f"the certificate expired on {_day(leaf.not_valid_after_utc)}",
                f"renew the certificate for {self.target} and install it on the server",
            )
        return _Diagnosis(
            "not-yet-valid",
            f"the certificate is not valid before {_day(leaf.not_valid_before_utc)}",
            "install the certificate that is valid now, and check the clock of the machine "
            "that issued it",
        )

    def _weak_signature_problem(self, profile: TrustProfile) -> _Diagnosis:
        weak = [
            c
            for i, c in self._candidate_path(profile)
            if not self._is_root(i) and _weak_signature(c)
        ]
        what = (
            f"{self._label(weak[0])} is signed with {_signature_name(weak[0])}"
            if weak
            else "a certificate in the path has a SHA-1 or MD5 signature"
        )
        return _Diagnosis(
            "weak-signature",
            f"{what}, which modern clients reject",
            "ask the CA for the SHA-256 version of the certificate and serve it in its place",
        )

    def _weak_key_problem(self, profile: TrustProfile) -> _Diagnosis:
        weak = [c for _, c in self._candidate_path(profile) if self._key(c)[1]]
        what = (
            f"{self._label(weak[0])} has a {self._key(weak[0])[0]} key"
            if weak
            else "a CA in the path has a short key"
        )
        return _Diagnosis(
            "weak-key",
            f"{what}, which modern clients reject",
            "serve a chain from a CA whose keys are RSA 2048+ or EC P-256+",
        )

    def _structure_problem(self, profile: TrustProfile, error: str) -> _Diagnosis:
        served = self.served
        top = served.certs[served.top()]
        if served.top() == 0 and served.self_signed[0]:
            return _Diagnosis(
                "self-signed",
                "the certificate is self-signed",
                f"serve a certificate for {self.target} from a CA the clients trust, or, if it "
                "is pinned on purpose, add it to the clients' trust store",
            )
        if served.self_signed[served.top()]:
            return _Diagnosis(
                "untrusted",
                f"the chain ends at the root {self._label(top)}, which the trust store does not hold",
                f"serve a chain to a root the clients trust; if {self._label(top)} is your private CA, "
                "add it to the clients' trust store",
            )
        if self._anchor(profile) is None:
            issuer = top.issuer.rfc4514_string()
            if self._issuer_known(top) or _has_aia_issuer(top):
                return _Diagnosis(
                    "incomplete-chain",
                    f"the server does not send {issuer}, the issuer of {self._label(top)}",
                    f"add the intermediate {issuer} to the server's chain file after "
                    f"{self._label(top)}; browsers may fetch it themselves (AIA), other clients fail",
                )
            return _Diagnosis(
                "untrusted",
                f"{self._label(top)} is issued by {issuer}, which the server does not send and no "
                "trust store holds",
                f"if {issuer} is an intermediate, serve it after {self._label(top)}; if it is a private "
                "root, add it to the clients' trust store",
            )
        detail = error.removeprefix("validation failed: ").split(" (encountered")[0]
        return _Diagnosis(
            "untrusted",
            f"the path to the trust store's root is rejected ({detail})",
            "compare the CA certificates' extensions (basicConstraints, keyUsage, name "
            "constraints) with what the CA currently issues, and serve its current chain",
        )

    def _issuer_known(self, cert: x509.Certificate) -> bool:
        issuer = cert.issuer
        return any(issuer in p.by_subject for p in self.trust + self.clients)

    def _is_root(self, position: int | None) -> bool:
        return position is None or self.served.self_signed[position]

    def _name_problem(self) -> _Diagnosis:
        if not self.names.present:
            return _Diagnosis(
                "hostname-mismatch",
                "the certificate has no subjectAltName, so it covers no name (clients ignore "
                "the common name)",
                f"reissue the certificate with {self.target} in its subjectAltName",
            )
        return _Diagnosis(
            "hostname-mismatch",
            f"the certificate does not cover {self.target} (it covers {self.names.listing()})",
            f"serve a certificate whose subjectAltName includes {self.target}",
        )

    # -- findings from the structure --

    def _leaf_dates(self) -> list[Finding]:
        if _valid_at(self.served.leaf, self.now):
            return []
        d = self._leaf_date_problem(self.now)
        return [finding(d.code, d.message, d.hint)]

    def _name_findings(self) -> list[Finding]:
        names, sni, host = self.names, self.sni, self.connect_host
        if not names.present:
            d = self._name_problem()
            return [finding(d.code, d.message, d.hint)]
        covered = f"it covers {names.listing()}"
        if sni is not None and not names.covers(sni):
            if _same_host(sni, host):
                also = ""
            elif names.covers(host):
                also = f"; it does cover the CONNECT host {host}"
            else:
                also = f", nor the CONNECT host {host}"
            return [finding(
                "hostname-mismatch",
                f"the certificate does not cover the SNI name {sni}{also} ({covered})",
                f"serve a certificate whose subjectAltName includes {sni}, or have the client "
                "ask for a name the certificate covers",
            )]
        if sni is None and not names.covers(host):
            fix = (
                "have the client connect by the hostname it means, and send it as SNI"
                if _ip_literal(host)
                else f"make the client send the SNI {host}"
            )
            return [finding(
                "hostname-mismatch",
                "the client sent no SNI and the certificate the server chose does not cover "
                f"the CONNECT host {host} ({covered})",
                f"{fix} (servers with several sites pick a default certificate without it), "
                f"or serve a certificate covering {host}",
            )]
        # By IP with a name in the SNI, the client checks that name; a CONNECT hostname
        # other than the SNI may be the name the client checks instead.
        other_name = sni is not None and _ip_literal(host) is None and not _same_host(sni, host)
        if other_name and not names.covers(host):
            return [finding(
                "hostname-mismatch",
                f"the certificate covers the SNI name {sni} but not the CONNECT host {host}",
                "a client that checks the name it gave the proxy fails: make it send the SNI "
                f"{host}, or have it connect to {sni}",
            )]
        return []

    def _path_certs(self, path: list[x509.Certificate]) -> list[_Positioned]:
        """The served walk and the validated path together: every certificate a client may use."""
        out: list[_Positioned] = [(i, self.served.certs[i]) for i in self.served.walk]
        seen = {self._fingerprint(c) for _, c in out}
        for cert in path:
            fp = self._fingerprint(cert)
            if fp not in seen:
                seen.add(fp)
                out.append((self.served.index.get(fp), cert))
        return out

    def _weak(self, path: list[x509.Certificate], failing: set[str]) -> list[Finding]:
        out = []
        for position, cert in self._path_certs(path):
            where = "the certificate" if position == 0 else self._label(cert)
            fix = (
                "reissue the certificate"
                if position == 0
                else f"ask the CA for a current version of {self._label(cert)}"
            )
            if not self._is_root(position) and _weak_signature(cert):
                rejected = ", which modern clients reject" if "weak-signature" in failing else ""
                out.append(finding(
                    "weak-signature",
                    f"{where} is signed with {_signature_name(cert)}, a broken hash{rejected}",
                    f"{fix} with a SHA-256 signature and serve it in its place",
                    ERROR if rejected else None,
                ))
            if self._key(cert)[1]:
                rejected = ", which modern clients reject" if "weak-key" in failing else ""
                out.append(finding(
                    "weak-key",
                    f"{where} has a {self._key(cert)[0]} key, below RSA 2048 / EC 256 "
                    f"bits{rejected}",
                    f"{fix} with an RSA 2048+ or EC P-256+ key",
                    ERROR if rejected else None,
                ))
        return out

    def _expired_in_chain(self) -> list[Finding]:
        for i in self.served.walk[1:]:
            cert = self.served.certs[i]
            if cert.not_valid_after_utc < self.now:
                label, day = self._label(cert), _day(cert.not_valid_after_utc)
                issuer = cert.issuer.rfc4514_string()
                return [finding(
                    "expired-in-chain",
                    f"the served chain contains {label} (certificate #{i}, issued by {issuer}), "
                    f"expired {day}: modern clients find another path, clients that follow the "
                    "served chain do not",
                    f"the server sends {label}, expired {day}; clients that build the path from "
                    f"the served certificates ({LEGACY_CLIENTS}) fail; "
                    "serve leaf + intermediate only",
                )]
        return []

    def _order(self) -> list[Finding]:
        walk = self.served.walk
        for child, issuer in zip(walk, walk[1:]):
            if issuer < child:
                certs = self.served.certs
                return [finding(
                    "wrong-order",
                    f"the certificates are not sent in issuing order: {self._label(certs[issuer])} "
                    f"(#{issuer}) issues {self._label(certs[child])} (#{child}) but is sent before it",
                    "order the server's chain file: the leaf first, then each certificate's issuer "
                    f"(served positions in path order: {' → '.join(f'#{i}' for i in walk)})",
                )]
        return []

    def _anchors(self) -> list[Finding]:
        out = []
        for i, cert in enumerate(self.served.certs[1:], start=1):
            if self.served.self_signed[i] and self._held_as_root(cert):
                out.append(finding(
                    "contains-anchor",
                    f"the server sends the root {self._label(cert)} (certificate #{i}), which "
                    "clients already hold",
                    "remove the root from the server's chain file: clients use their own copy, "
                    "so it only adds bytes to every handshake",
                ))
        return out

    def _held_as_root(self, cert: x509.Certificate) -> bool:
        held = (cert.subject, spki(cert))
        return any(held in p.held for p in self.trust + self.clients)

    def _extra(self, path: list[x509.Certificate]) -> list[Finding]:
        used = {i for i, _ in self._path_certs(path) if i is not None}
        extra = [i for i in range(len(self.served.certs)) if i not in used]
        if not extra:
            return []
        listed = ", ".join(f"#{i} {self._label(self.served.certs[i])}" for i in extra[:LISTED])
        more = f" and {len(extra) - LISTED} more" if len(extra) > LISTED else ""
        return [finding(
            "extra-certs",
            f"the server sends {len(extra)} certificate(s) that no path from the leaf uses: "
            f"{listed}{more}",
            "remove them from the server's chain file",
        )]

    def _expiring_soon(self, path: list[x509.Certificate]) -> list[Finding]:
        now, out = self.now, []
        for position, cert in self._path_certs(path):
            end = cert.not_valid_after_utc
            if position is None or not now <= end <= now + self.expiring:
                continue  # roots in the client's store are the client's to renew
            days = round((end - now) / dt.timedelta(days=1))
            if position == 0:
                message = f"the certificate expires on {_day(end)} (in {days} days)"
                hint = f"renew the certificate for {self.target} before {_day(end)}"
            else:
                message = (
                    f"{self._label(cert)} (certificate #{position}) expires on {_day(end)} "
                    f"(in {days} days)"
                )
                hint = (
                    f"get the CA's current intermediate and serve it in place of {self._label(cert)} "
                    f"before {_day(end)}"
                )
            out.append(finding("expiring-soon", message, hint))
        return out
