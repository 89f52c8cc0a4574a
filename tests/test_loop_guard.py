"""The self-loop decision (inspector/loop_guard.py) over every form a target can take."""

from __future__ import annotations

import ipaddress

import pytest

from inspector.findings.tunnel import loop_finding
from inspector.observe.loop_guard import (
    is_local_address,
    loop_reason,
    needs_resolving,
    numeric_address,
)

PORT = 8080
V4_LOOPBACK = [("127.0.0.1", PORT)]

# Every spelling getaddrinfo/inet_aton reads as an address of the local host's loopback
# (or the unspecified address, which connect() sends to the local host).
SELF_FORMS = [
    "127.0.0.1", "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0x7f.1", "017700000001",
    "127.000.000.001", "127.0.0.2", "127.255.255.254",
    "0.0.0.0", "0",
    "::ffff:127.0.0.1", "[::ffff:127.0.0.1]", "::ffff:7f00:1", "::ffff:0.0.0.0", "::",
    "localhost", "LOCALHOST", "localhost.", "app.localhost",
]


@pytest.mark.parametrize("host", SELF_FORMS)
def test_every_form_of_the_own_address_is_a_loop(host):
    reason = loop_reason(host, PORT, V4_LOOPBACK)
    assert reason is not None
    assert "own listening address (127.0.0.1:8080)" in reason


@pytest.mark.parametrize("host", SELF_FORMS)
def test_the_same_forms_on_another_port_are_not(host):
    assert loop_reason(host, 443, V4_LOOPBACK) is None


@pytest.mark.parametrize("host", ["10.0.0.1", "192.0.2.7", "::ffff:10.0.0.1", "8.8.8.8"])
def test_other_addresses_are_not_a_loop(host):
    assert loop_reason(host, PORT, V4_LOOPBACK) is None


def test_a_name_is_not_decided_without_its_addresses():
    assert loop_reason("example.com", PORT, V4_LOOPBACK) is None
    assert needs_resolving("example.com", PORT, V4_LOOPBACK)
    # only on a port the proxy listens on: other ports cannot reach it
    assert not needs_resolving("example.com", 443, V4_LOOPBACK)
    for host in ("127.1", "localhost", "::1"):
        assert not needs_resolving(host, PORT, V4_LOOPBACK)


def test_ipv6_loopback_listener():
    listening = [("::1", PORT, 0, 0)]
    for host in ("::1", "[::1]", "0:0:0:0:0:0:0:1", "::", "localhost"):
        assert loop_reason(host, PORT, listening) is not None, host
    # another family's loopback is another socket
    assert loop_reason("127.0.0.1", PORT, listening) is None


@pytest.mark.parametrize("listen_host", ["", "0.0.0.0", "::"])
def test_a_listener_on_every_interface_owns_every_local_address(listen_host):
    listening = [(listen_host, PORT)]
    for host in ("127.0.0.1", "127.1", "::1", "0.0.0.0", "::ffff:127.0.0.1"):
        assert loop_reason(host, PORT, listening) is not None, host
    lan = ipaddress.ip_address("192.0.2.7")
    assert loop_reason("192.0.2.7", PORT, listening) is None  # unknown without is_local
    assert loop_reason("192.0.2.7", PORT, listening, lambda a: a == lan) is not None
    assert loop_reason("192.0.2.8", PORT, listening, lambda a: a == lan) is None


def test_a_listener_on_one_address():
    listening = [("192.0.2.7", PORT)]
    assert loop_reason("192.0.2.7", PORT, listening) is not None
    assert loop_reason("::ffff:192.0.2.7", PORT, listening) is not None
    assert loop_reason("0.0.0.0", PORT, listening) is not None
    assert loop_reason("127.0.0.1", PORT, listening) is None


def test_several_listeners():
    listening = [("127.0.0.1", 8080), ("::1", 9090, 0, 0)]
    assert loop_reason("127.1", 8080, listening) is not None
    assert loop_reason("127.1", 9090, listening) is None
    assert "([::1]:9090)" in loop_reason("::1", 9090, listening)


@pytest.mark.parametrize("host,expected", [
    ("127.1", "127.0.0.1"), ("2130706433", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
    ("0177.0.0.1", "127.0.0.1"), ("0", "0.0.0.0"), ("::ffff:127.0.0.1", "127.0.0.1"),
    ("[::1]", "::1"), ("::", "::"), ("192.0.2.7", "192.0.2.7"),
])
def test_numeric_address(host, expected):
    assert numeric_address(host) == ipaddress.ip_address(expected)


@pytest.mark.parametrize("host", ["example.com", "localhost", "127.0.0.1.", "4294967296",
                                  "127.0.0.256", "", "[", "a\x00b", "é" * 70, "x" * 300])
def test_names_and_junk_are_not_numeric(host):
    assert numeric_address(host) is None


def test_is_local_address_binds_only_local_addresses():
    assert is_local_address(ipaddress.ip_address("127.0.0.1"))
    assert not is_local_address(ipaddress.ip_address("192.0.2.1"))  # TEST-NET: on no interface


def test_the_finding_names_the_target_and_how_to_fix_it():
    f = loop_finding("127.1", PORT, loop_reason("127.1", PORT, V4_LOOPBACK))
    assert (f.code, f.severity) == ("proxy-loop", "error")
    assert f.message.startswith("CONNECT 127.1:8080 leads back into the proxy")
    assert "real server" in f.hint
