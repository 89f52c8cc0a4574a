"""Encrypted Client Hello through the real proxy. No client installed here sends ECH
(OpenSSL 3.0, GnuTLS 3.7, Go 1.19 predate it; Chromium sends only its GREASE), so the
ClientHello is a real OpenSSL one with the encrypted_client_hello extension added, as
an ECH client would send it: the outer SNI is the provider's public name."""

from __future__ import annotations

import os
import ssl

import pytest

from inspector.findings.sni import sni_findings
from inspector.lab.chains import build_chain_lab
from inspector.lab.http1 import connect_tunnel
from inspector.observe.sni import ech_mode
from inspector.observe.wire import EXT_ECH, ClientHello

PUBLIC_NAME = "public.provider.test"


def _hello_with_ech(sni: str) -> bytes:
    """OpenSSL's ClientHello record for `sni`, with an ECH outer extension appended."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    record = outgoing.read()
    body = record[9:]  # record header 5 + handshake header 4
    # the extensions block is last: find its start from the fixed fields before it
    pos = 2 + 32
    pos += 1 + body[pos]
    pos += 2 + int.from_bytes(body[pos:pos + 2], "big")
    pos += 1 + body[pos]
    ext_len = int.from_bytes(body[pos:pos + 2], "big")
    exts = body[pos + 2:pos + 2 + ext_len]
    # ECHClientHello (outer): type 0, HPKE KDF HKDF-SHA256, AEAD AES-128-GCM, a config id,
    # the encapsulated key and the encrypted inner hello (random bytes stand in for them)
    ech = b"\x00" + b"\x00\x01" + b"\x00\x01" + b"\x2a" + b"\x00\x20" + os.urandom(32) \
        + b"\x00\xd0" + os.urandom(208)
    exts += EXT_ECH.to_bytes(2, "big") + len(ech).to_bytes(2, "big") + ech
    body = body[:pos] + len(exts).to_bytes(2, "big") + exts
    msg = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + len(msg).to_bytes(2, "big") + msg


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    lab = build_chain_lab(tmp_path_factory.mktemp("ech-lab"))
    server = lab.start("good")
    yield lab, server
    server.stop()


@pytest.mark.parametrize("sni,mode", [(PUBLIC_NAME, "outer"), ("good.lab.test", "grease")])
def test_ech_is_never_an_error(start_proxy, good, sni, mode):
    lab, server = good
    host = lab.scenarios["good"].hostname
    p = start_proxy("--trust", str(lab.root_pem),
                    "--connect-to", f"{host}:443:127.0.0.1:{server.port}")
    with connect_tunnel(p.port, host, 443) as sock:
        sock.sendall(_hello_with_ech(sni))
        sock.settimeout(10)
        assert sock.recv(5)[:1] == b"\x16"  # the server answered the outer hello
    rec = p.records(1)[0]
    assert rec["client_hello"]["ech"] == mode
    assert rec["sni"] == sni
    codes = {f["code"] for f in rec["findings"]}
    assert not codes & {"sni-mismatch", "hostname-mismatch"}
    assert ("ech" in codes) == (mode == "outer")
    if mode == "outer":
        f = next(f for f in rec["findings"] if f["code"] == "ech")
        assert f["severity"] == "info" and PUBLIC_NAME in f["message"]
    # the chain is judged for the CONNECT host, which the server's certificate covers
    assert rec["chain"]["profiles"][str(lab.root_pem)]["trusted"] is True
    assert not any(f["severity"] == "error" for f in rec["findings"] if f["code"] != "handshake-aborted")


def test_ech_mode_without_the_extension_is_null():
    ch = ClientHello(0x0303, b"a.test", True, extensions=(0,))
    assert ech_mode("b.test", ch) is None
    assert [f.code for f in sni_findings("b.test", b"a.test", True, ech=None)] == ["sni-mismatch"]
