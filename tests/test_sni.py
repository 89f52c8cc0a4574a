"""SNI versus CONNECT host: the pure comparison and its findings."""

from __future__ import annotations

import pytest

from inspector.findings.codes import is_flagged
from inspector.findings.sni import sni_findings
from inspector.observe.sni import normalise_host
from inspector.records.escape import safe


def codes(host, sni, present=None):
    raw = None if sni is None else sni.encode("utf-8", "surrogateescape") if isinstance(sni, str) else sni
    return [f.code for f in sni_findings(host, raw, raw is not None if present is None else present)]


@pytest.mark.parametrize("a,b", [
    ("Example.COM", "example.com"),
    ("example.com.", "example.com"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("BÜCHER.example.", "xn--bcher-kva.example"),
])
def test_equivalent_names_normalise_equal(a, b):
    assert normalise_host(a) == normalise_host(b) is not None


@pytest.mark.parametrize("bad", ["", "a..b", "-a.com", "a-.com", "a b.com", "a/b", "x" * 64 + ".com", "[x]"])
def test_non_hostnames_do_not_normalise(bad):
    assert normalise_host(bad) is None


def test_matching_sni_has_no_findings():
    assert codes("api.example.com", "API.example.com.") == []


def test_missing_sni_to_a_name_is_an_error():
    assert codes("piay.example", None) == ["sni-missing"]


def test_missing_sni_to_an_ip_is_only_info():
    found = sni_findings("10.1.2.3", None, False)
    assert [f.code for f in found] == ["connect-ip"]
    assert not is_flagged(found)


def test_mismatch_is_an_error():
    assert codes("a.example", "b.example") == ["sni-mismatch"]


def test_idna_sni_matching_unicode_connect_host():
    assert codes("bücher.example", "xn--bcher-kva.example") == []


@pytest.mark.parametrize("raw,visible", [
    (b"bad name", "bad name"),
    (b"evil[/]\x1b]0;x\x07", r"evil[/]\x1b]0;x\x07"),
    (b"\xff\xfe.example", r"\xff"),
    ("a\u202eb.example".encode(), r"a\u202eb.example"),  # a bidi override
])
def test_invalid_sni_is_reported_escaped(raw, visible):
    found = sni_findings("a.example", raw, True)
    assert [f.code for f in found] == ["sni-invalid"]
    # The finding's own text is inert, whatever later prints it: every character a
    # stranger sent is named visibly, and escaping it again changes nothing.
    message = found[0].message
    assert message.isprintable(), message
    assert visible in message
    assert safe(message) == message


def test_empty_server_name_extension_is_invalid():
    assert codes("a.example", None, present=True) == ["sni-invalid"]


def test_ip_literal_in_sni_is_a_warning():
    found = sni_findings("a.example", b"192.0.2.1", True)
    assert [(f.code, f.severity) for f in found] == [("sni-invalid", "warning")]


def test_escape_makes_controls_visible():
    assert safe("a\x1b[31mb\u202ec") == "a\\x1b[31mb\\u202ec"
    assert safe("plain.example") == "plain.example"
    assert safe(None) == ""
