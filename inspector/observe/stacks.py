"""Which TLS library sent a ClientHello, told from what it offers and in which order.

Each stack has a few features that its library sets whatever the application asks for
(SNI or none, ALPN or none, TLS 1.3 or capped at 1.2): the order of its default groups,
signature algorithms and cipher suites, and extensions only it sends. They were read
from ClientHellos recorded here from each real stack (tests/data/stack_hellos.json:
OpenSSL 3.0 through curl, Python, Node and s_client; GnuTLS 3.7; Go 1.19; Java 17;
Erlang/OTP 25) and, for Chromium and Firefox, from the captures published with the
JA4 specification. A stack is named when at least two of its features match and no
other stack matches as many; otherwise the stack is unknown (None).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from inspector.observe.wire import ClientHello, is_grease

MIN_FEATURES = 2

OPENSSL, GNUTLS, GO, JAVA, ERLANG, BORINGSSL, NSS = (
    "openssl", "gnutls", "go", "java", "erlang-otp", "boringssl", "nss")


@dataclass(frozen=True)
class Feature:
    text: str  # what matched, for the record's evidence
    test: Callable[[ClientHello], bool]


def _clean(values: tuple[int, ...]) -> list[int]:
    return [v for v in values if not is_grease(v)]


def _starts(values: tuple[int, ...], prefix: tuple[int, ...]) -> bool:
    return tuple(_clean(values)[: len(prefix)]) == prefix


def _has(ext: int) -> Callable[[ClientHello], bool]:
    return lambda ch: ext in ch.extensions


def _tls13_suites(ch: ClientHello) -> tuple[int, ...]:
    return tuple(c for c in _clean(ch.cipher_suites) if 0x1300 <= c <= 0x13FF)


def _ext_adjacent(first: int, second: int) -> Callable[[ClientHello], bool]:
    def test(ch: ClientHello) -> bool:
        exts = _clean(ch.extensions)
        return any(a == first and b == second for a, b in zip(exts, exts[1:]))
    return test


def _first_extension_besides_sni(ext: int) -> Callable[[ClientHello], bool]:
    def test(ch: ClientHello) -> bool:
        exts = [e for e in _clean(ch.extensions) if e != 0]
        return bool(exts) and exts[0] == ext
    return test


def _go_suites(ch: ClientHello) -> bool:
    suites = _clean(ch.cipher_suites)
    return (_starts(ch.cipher_suites, (0xC02B, 0xC02F, 0xC02C, 0xC030))
            and (not _tls13_suites(ch) or tuple(suites[-3:]) == (0x1301, 0x1302, 0x1303)))


STACKS: dict[str, tuple[Feature, ...]] = {
    OPENSSL: (
        Feature("ec_point_formats (11) right before supported_groups (10)", _ext_adjacent(11, 10)),
        Feature("groups begin x25519, secp256r1, x448 (OpenSSL's default order)",
                lambda ch: _starts(ch.supported_groups, (0x001D, 0x0017, 0x001E))),
        Feature("signature algorithms begin with ECDSA P-256/P-384/P-521, Ed25519, Ed448, "
                "then RSA-PSS-PSS (OpenSSL's default order)",
                lambda ch: _starts(ch.signature_algorithms,
                                   (0x0403, 0x0503, 0x0603, 0x0807, 0x0808, 0x0809))),
    ),
    GNUTLS: (
        Feature("status_request (5) is the first extension", lambda ch: _starts(ch.extensions, (5,))),
        Feature("groups begin secp256r1, secp384r1, secp521r1, x25519 (GnuTLS's order)",
                lambda ch: _starts(ch.supported_groups, (0x0017, 0x0018, 0x0019, 0x001D))),
        Feature("signature algorithms begin rsa_pkcs1_sha256, rsa_pss_pss_sha256, "
                "rsa_pss_rsae_sha256 (GnuTLS's order)",
                lambda ch: _starts(ch.signature_algorithms, (0x0401, 0x0809, 0x0804))),
        Feature("record_size_limit (28) as the last extension",
                lambda ch: _clean(ch.extensions)[-1:] == [28]),
    ),
    GO: (
        Feature("cipher suites begin ECDHE AES-128-GCM, then AES-256-GCM, with the TLS 1.3 "
                "suites last (crypto/tls's order)", _go_suites),
        Feature("signature algorithms begin rsa_pss_rsae_sha256, ecdsa_secp256r1_sha256, "
                "ed25519 (crypto/tls's order)",
                lambda ch: _starts(ch.signature_algorithms, (0x0804, 0x0403, 0x0807))),
        Feature("groups exactly x25519, secp256r1, secp384r1, secp521r1 and "
                "signed_certificate_timestamp (18) asked for",
                lambda ch: tuple(_clean(ch.supported_groups)) == (0x001D, 0x0017, 0x0018, 0x0019)
                and 18 in ch.extensions),
    ),
    JAVA: (
        Feature("status_request_v2 (17): only JSSE sends it", _has(17)),
        Feature("signature_algorithms_cert (50) next to signature_algorithms", _has(50)),
        Feature("cipher suites (TLS 1.2) begin ECDHE-ECDSA AES-256-GCM, AES-128-GCM, "
                "CHACHA20 (JSSE's order)",
                lambda ch: tuple(c for c in _clean(ch.cipher_suites) if c < 0x1300 or c > 0x13FF)[:3]
                == (0xC02C, 0xC02B, 0xCCA9)),
    ),
    ERLANG: (
        Feature("the renegotiation SCSV (0x00ff) first in the cipher suites",
                lambda ch: _starts(ch.cipher_suites, (0x00FF,))),
        Feature("signature_algorithms (13) the first extension after server_name",
                _first_extension_besides_sni(13)),
        Feature("all five TLS 1.3 suites offered, CCM ones included "
                "(TLS_AES_256_GCM_SHA384 first)",
                lambda ch: _tls13_suites(ch) == (0x1302, 0x1301, 0x1303, 0x1304, 0x1305)),
    ),
    BORINGSSL: (
        Feature("GREASE values in the cipher suites and extensions (RFC 8701)",
                lambda ch: any(map(is_grease, ch.cipher_suites)) and any(map(is_grease, ch.extensions))),
        Feature("cipher suites begin TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, "
                "TLS_CHACHA20_POLY1305_SHA256, then ECDHE AES-128-GCM (BoringSSL's order)",
                lambda ch: _starts(ch.cipher_suites, (0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F))),
        Feature("compress_certificate (27) or ALPS (17513/17613)",
                lambda ch: bool({27, 17513, 17613} & set(ch.extensions))),
    ),
    NSS: (
        Feature("delegated_credentials (34): NSS sends it", _has(34)),
        Feature("TLS 1.3 suites in NSS's order: AES-128-GCM, CHACHA20, AES-256-GCM",
                lambda ch: _tls13_suites(ch) == (0x1301, 0x1303, 0x1302)),
        Feature("record_size_limit (28) with ffdhe groups after the curves",
                lambda ch: 28 in ch.extensions and 0x0100 in ch.supported_groups),
    ),
}


@dataclass(frozen=True)
class StackGuess:
    name: str | None  # None: unknown
    evidence: tuple[str, ...]  # the features that matched (of the named stack, or all)


def identify(ch: ClientHello) -> StackGuess:
    """The TLS library family that most likely sent this ClientHello, with why."""
    scores = {name: [f.text for f in features if f.test(ch)] for name, features in STACKS.items()}
    ranked = sorted(scores.items(), key=lambda kv: -len(kv[1]))
    (best, matched), runner_up = ranked[0], ranked[1][1]
    if len(matched) >= MIN_FEATURES and len(matched) > len(runner_up):
        return StackGuess(best, tuple(matched))
    return StackGuess(None, ())
