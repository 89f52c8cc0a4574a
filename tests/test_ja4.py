"""JA4 from our own code, against the vectors published with the JA4 specification."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspector.observe import wire
from inspector.observe.ja4 import ja4

DATA = json.loads((Path(__file__).parent / "data" / "ja4_vectors.json").read_text())


@pytest.mark.parametrize("vector", DATA["vectors"], ids=lambda v: f"{v['capture']}:{v['ja4']}")
def test_published_vectors(vector):
    ch = wire.parse_client_hello(bytes.fromhex(vector["client_hello"]))
    if "ja4_by_spec" in vector:  # where the reference code lags the spec (see its note)
        assert ja4(ch) == vector["ja4_by_spec"]
        assert ja4(ch).split("_")[1:] == vector["ja4"].split("_")[1:]
    else:
        assert ja4(ch) == vector["ja4"]


def test_the_specifications_worked_example():
    ex = DATA["spec_example"]

    def values(key):
        return tuple(int(x, 16) for x in ex[key].split(","))

    ch = wire.ClientHello(0x0303, b"example.com", True, ("h2",), (int(ex["version"], 16),),
                          cipher_suites=values("ciphers"), extensions=values("extensions"),
                          signature_algorithms=values("signature_algorithms"),
                          alpn_raw=(ex["alpn"].encode(),))
    assert ja4(ch) == ex["ja4"]


def test_vectors_cover_the_corners():
    """The published set has each corner the spec names: no SNI, no ALPN, a non-ASCII
    ALPN value, TLS 1.0 to 1.3, a hello without signature algorithms."""
    a_parts = {v["ja4"].split("_")[0] for v in DATA["vectors"]}
    assert any(p[3] == "i" for p in a_parts) and any(p[3] == "d" for p in a_parts)
    assert any(p.endswith("00") for p in a_parts) and any("note" in v for v in DATA["vectors"])
    assert {p[1:3] for p in a_parts} >= {"10", "12", "13"}
    assert any(v["ja4"].endswith("_000000000000") for v in DATA["vectors"])


def test_grease_is_ignored_everywhere():
    base = wire.ClientHello(0x0303, b"a.test", True, ("http/1.1",), (0x0304, 0x0303),
                            cipher_suites=(0x1301, 0xC02B), extensions=(0, 16, 43, 13),
                            signature_algorithms=(0x0403,), alpn_raw=(b"http/1.1",))
    greased = wire.ClientHello(0x0303, b"a.test", True, ("http/1.1",), (0x0304, 0x0303),
                               cipher_suites=(0x2A2A, 0x1301, 0xC02B),
                               extensions=(0xFAFA, 0, 16, 43, 13, 0x1A1A),
                               signature_algorithms=(0x0A0A, 0x0403), alpn_raw=(b"http/1.1",))
    assert ja4(base) == ja4(greased) and ja4(base).startswith("t13d0204h1_")
