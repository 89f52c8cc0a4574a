"""Stack identification on ClientHellos recorded from real stacks (and, for Chromium and
Firefox, the captures published with JA4). The live runs are in test_real_stacks.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspector.observe import wire
from inspector.observe.stacks import STACKS, identify

DATA = Path(__file__).parent / "data"
HELLOS = json.loads((DATA / "stack_hellos.json").read_text())["hellos"]
VECTORS = json.loads((DATA / "ja4_vectors.json").read_text())["vectors"]

# What sent each JA4 capture's hello: Chrome's (BoringSSL), Firefox's (NSS), or a client
# we do not name (old OpenSSL, Apple's stack, scripts).
CAPTURE_STACKS = {
    "t13d1516h2_8daaf6152771_e5627efa2ab1": "boringssl",
    "t13d1516h2_8daaf6152771_9b887d9acb53": "boringssl",
    "t13d1516h1_8daaf6152771_e5627efa2ab1": "boringssl",
    "t13d1517h1_8daaf6152771_6cdcb247c39b": "boringssl",
    "t13d151400_8daaf6152771_de4a06bb82e3": "boringssl",
    "t13d151699_8daaf6152771_e5627efa2ab1": "boringssl",
    "t13d1615h2_46e7e9700bed_45f260be83e2": "boringssl",
    "t13d1715h2_5b57614c22b0_3d5424432f57": "nss",
}


@pytest.mark.parametrize("hello", HELLOS, ids=lambda h: f"{h['client']}, {h['variant']}")
def test_recorded_stacks_are_named(hello):
    guess = identify(wire.parse_client_hello(bytes.fromhex(hello["client_hello"])))
    assert guess.name == hello["stack"]
    assert len(guess.evidence) >= 2
    texts = {f.text for f in STACKS[hello["stack"]]}
    assert set(guess.evidence) <= texts


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: v["ja4"])
def test_published_captures(vector):
    guess = identify(wire.parse_client_hello(bytes.fromhex(vector["client_hello"])))
    assert guess.name == CAPTURE_STACKS.get(vector["ja4"])


def test_every_stack_is_covered_by_a_recording():
    seen = {h["stack"] for h in HELLOS} | set(CAPTURE_STACKS.values())
    assert seen == set(STACKS)


def test_a_bare_hello_is_unknown():
    ch = wire.ClientHello(0x0303, None, False, cipher_suites=(0x002F,), extensions=())
    assert identify(ch).name is None and identify(ch).evidence == ()


def test_a_tie_between_two_stacks_names_neither():
    """Two features of JSSE (status_request_v2, signature_algorithms_cert) and two of
    OTP (the SCSV first, signature_algorithms first): no guess beats the other."""
    ch = wire.ClientHello(0x0303, None, False, cipher_suites=(0x00FF, 0x002F),
                          extensions=(13, 17, 50))
    assert identify(ch).name is None
