"""JA4, the TLS client fingerprint, from a parsed ClientHello.

Written from FoxIO's published JA4 specification (BSD 3-Clause, technical_details/
JA4.md in github.com/FoxIO-LLC/ja4) and checked against the test vectors published
with it (tests/data/ja4_vectors.json). Only JA4 itself: the other JA4+ methods are
under a different licence.

    t13d1516h2_8daaf6152771_e5627efa2ab1
    ^ ^ ^ ^ ^ ^ cipher hash  extension + signature algorithm hash
    | | | | | first and last character of the first ALPN value
    | | | | extension count     (GREASE values are ignored everywhere)
    | | | cipher suite count
    | | d: SNI present, i: absent
    | highest offered version (supported_versions, else the hello's version)
    t: TLS over TCP
"""

from __future__ import annotations

import hashlib

from inspector.observe.wire import EXT_ALPN, EXT_SERVER_NAME, ClientHello, is_grease

_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3",
             0x0002: "s2", 0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}
_EMPTY = "000000000000"


def ja4(ch: ClientHello) -> str:
    """The JA4 fingerprint of a ClientHello seen over TCP."""
    ciphers = [c for c in ch.cipher_suites if not is_grease(c)]
    extensions = [e for e in ch.extensions if not is_grease(e)]
    version = max(ch.versions) if ch.versions else ch.legacy_version
    a = (
        "t"
        + _VERSIONS.get(version, "00")
        + ("d" if EXT_SERVER_NAME in extensions else "i")
        + f"{min(len(ciphers), 99):02d}"
        + f"{min(len(extensions), 99):02d}"
        + _alpn_chars(ch.alpn_raw[0] if ch.alpn_raw else b"")
    )
    b = _hash12(",".join(f"{c:04x}" for c in sorted(ciphers))) if ciphers else _EMPTY
    # SNI and ALPN are in part a: leaving them out keeps c the same for one client
    # whichever host it goes to and whatever it asks for.
    listed = sorted(e for e in extensions if e not in (EXT_SERVER_NAME, EXT_ALPN))
    if listed:
        text = ",".join(f"{e:04x}" for e in listed)
        sigalgs = [s for s in ch.signature_algorithms if not is_grease(s)]
        if sigalgs:  # in the order sent, not sorted
            text += "_" + ",".join(f"{s:04x}" for s in sigalgs)
        c = _hash12(text)
    else:
        c = _EMPTY
    return f"{a}_{b}_{c}"


def _alpn_chars(first: bytes) -> str:
    """First and last character of the first ALPN value; "00" when none. A value that
    starts or ends with a byte that is not an ASCII letter or digit is written by the
    first and last hex digit of its bytes instead."""
    if not first:
        return "00"
    head, tail = first[0], first[-1]
    if _alnum(head) and _alnum(tail):
        return chr(head) + chr(tail)
    hexed = first.hex()
    return hexed[0] + hexed[-1]


def _alnum(byte: int) -> bool:
    return 0x30 <= byte <= 0x39 or 0x41 <= byte <= 0x5A or 0x61 <= byte <= 0x7A


def _hash12(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]
