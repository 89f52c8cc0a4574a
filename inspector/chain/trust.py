"""Trust profiles: the root stores a served chain is judged against.

`--trust mozilla|system|PATH` (certifi's bundle, the CA file of this Python's OpenSSL,
a PEM file) and `--client NAME=PATH` each name one profile: a set of
root certificates and the cryptography `Store` built from them. Bundles are large and
the same few are named for every tunnel, so each file is read and parsed once per
content (keyed by path, size and modification time).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import ssl
import warnings
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.verification import Store

log = logging.getLogger(__name__)


_PEM_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class TrustError(ValueError):
    """A trust profile cannot be loaded; the message is one sentence for the user."""


@dataclass(frozen=True)
class TrustProfile:
    name: str
    certificates: tuple[x509.Certificate, ...]
    store: Store
    skipped: int = 0  # certificates in the bundle that cryptography cannot parse
    # Indexed once: each look-up by name otherwise walks the whole bundle, and every
    # `cert.subject` builds a new Name (cryptography parses it on each access). These
    # scans were 75-80% of a rejected chain's verdict.
    by_subject: dict[x509.Name, tuple[x509.Certificate, ...]] = field(
        init=False, repr=False, compare=False)
    held: frozenset[tuple[x509.Name, bytes]] = field(init=False, repr=False, compare=False)
    # when each root's validity starts and ends: which roots a verdict's moment sees
    bounds: Bounds = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_subject: dict[x509.Name, list[x509.Certificate]] = {}
        held = set()
        for cert in self.certificates:
            subject = cert.subject
            by_subject.setdefault(subject, []).append(cert)
            held.add((subject, spki(cert)))
        object.__setattr__(self, "by_subject", {k: tuple(v) for k, v in by_subject.items()})
        object.__setattr__(self, "held", frozenset(held))
        object.__setattr__(self, "bounds", validity_bounds(self.certificates))

    def issuers_of(self, cert: x509.Certificate) -> tuple[x509.Certificate, ...]:
        """The bundle's certificates named as `cert`'s issuer (candidates to check)."""
        return self.by_subject.get(cert.issuer, ())


# Validity starts and ends of some certificates, each list sorted.
Bounds = tuple[list[dt.datetime], list[dt.datetime]]


def validity_bounds(certs: Iterable[x509.Certificate]) -> Bounds:
    certs = list(certs)
    return (sorted(c.not_valid_before_utc for c in certs),
            sorted(c.not_valid_after_utc for c in certs))


def era(bounds: Bounds, moment: dt.datetime) -> tuple[int, int]:
    """Which of the certificates are valid at `moment` (start <= moment <= end), in two
    numbers: how many have started by then, how many ended before. Two moments with the
    same numbers see the same certificates valid."""
    starts, ends = bounds
    return bisect_right(starts, moment), bisect_left(ends, moment)


def spki(cert: x509.Certificate) -> bytes:
    """The certificate's public key, as DER: what makes two certificates one CA."""
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def load_profile(spec: str, name: str | None = None) -> TrustProfile:
    """The profile for `mozilla`, `system` or a PEM file path, called `name` (default: spec)."""
    if spec == "system":
        path = _system_bundle()
    else:
        path = os.path.realpath(certifi.where() if spec == "mozilla" else spec)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TrustError(f"trust store {spec!r}: file {path} does not exist") from None
    except OSError as e:
        raise TrustError(f"trust store {spec!r}: cannot read {path} ({e.strerror})") from None
    certificates, store, skipped = _load_bundle(path, st.st_size, st.st_mtime_ns)
    return TrustProfile(name or spec, certificates, store, skipped)


@lru_cache(maxsize=16)
def _load_bundle(path: str, size: int, mtime_ns: int) -> tuple[tuple, Store, int]:
    # size and mtime_ns are part of the cache key only: an edited file is read again.
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise TrustError(f"cannot read trust store {path} ({e.strerror})") from None
    blocks = _PEM_BLOCK.findall(data)
    if not blocks:
        raise TrustError(f"trust store {path} contains no PEM certificates")
    certificates = []
    for block in blocks:
        try:
            certificates.append(_parse(block))
        except ValueError:
            continue  # one odd root must not cost the user the whole bundle; counted below
    skipped = len(blocks) - len(certificates)
    if skipped:
        log.warning("trust store %s: skipped %d certificates that cannot be parsed", path, skipped)
    if not certificates:
        raise TrustError(f"trust store {path} contains no certificate that can be parsed")
    return tuple(certificates), Store(certificates), skipped


def _system_bundle() -> str:
    """The CA file this Python's OpenSSL uses (SSL_CERT_FILE, else the build's default)."""
    cafile = ssl.get_default_verify_paths().cafile
    if cafile is None:
        raise TrustError("trust store 'system': this Python's OpenSSL has no CA file "
                         "(set SSL_CERT_FILE to a PEM bundle)")
    return os.path.realpath(cafile)


def _parse(block: bytes) -> x509.Certificate:
    # Six roots in certifi's bundle (Go Daddy and Starfield among them) have serial
    # number 0, which RFC 5280 forbids and cryptography >= 44 warns about. As trust
    # anchors their serial plays no part: they load without a warning (if cryptography
    # ever refuses them, they are counted as skipped, and the Go Daddy test fails).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning,
                                message=".*serial number.*")
        return x509.load_pem_x509_certificate(block)


def load_client_profile(spec: str) -> TrustProfile:
    """`NAME=PATH` (`--client`): a client's own root store, named for the report."""
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise TrustError(f"--client {spec!r} is not NAME=PATH (e.g. android5=old-roots.pem)")
    return load_profile(path, name=name)
