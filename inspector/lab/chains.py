"""The chain lab: one TLS server per way a served chain goes wrong, and its verdict.

`build_chain_lab(tmpdir)` makes a small PKI (the lab root and its intermediate; an
AddTrust-like pair of an expired old root and a new root; an unknown root) and, per
scenario, the chain a server sends (in served order), the leaf's key, a hostname under
`.lab.test`, and the finding codes `verify_chain` must report (`present`) and must not
(`absent`) when the chain is judged with `--trust root.pem` and the scenario's
`--client` stores. It writes to tmpdir:
- `root.pem`: what a normal client trusts (the lab root and the new root);
- `old-device.pem`: an old device's root store: the expired old root and the lab root,
  not the new root.
The hostnames do not resolve: clients reach a server through curl's `--resolve` or
`--connect-to`, or the proxy's `--connect-to`. Servers listen on 127.0.0.1 only.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID

from inspector.findings.codes import CODES
from inspector.lab.pki import DAY, NOW, Issued, make_cert, reissue, resigned
from inspector.lab.server import TLSServer

DOMAIN = "lab.test"
CA_LIFETIME = 3650 * DAY  # CA certificates outlive every scenario: only the leaf's dates vary
MARKUP = "[bold red]evil[/]\x1b]0;pwned\x07"  # Rich markup and an OSC title escape

EVERYTHING = frozenset(CODES)


@dataclass(frozen=True)
class Scenario:
    name: str
    hostname: str
    chain: tuple[x509.Certificate, ...]  # as served, leaf first
    key: object  # the leaf's private key
    present: frozenset[str]  # codes verify_chain must report
    absent: frozenset[str]  # codes it must not report
    clients: tuple[str, ...] = ()  # `--client NAME=PATH` stores to judge with
    sni_names: tuple[str, ...] | None = None  # the server refuses a missing or other SNI
    sha1_ca: bool = False  # a CA certificate in the chain is signed with SHA-1

    @property
    def chain_der(self) -> list[bytes]:
        return [c.public_bytes(serialization.Encoding.DER) for c in self.chain]


@dataclass(frozen=True)
class ChainLab:
    directory: Path
    scenarios: dict[str, Scenario]

    @property
    def root_pem(self) -> Path:
        return self.directory / "root.pem"

    @property
    def old_device_pem(self) -> Path:
        return self.directory / "old-device.pem"

    def start(self, name: str) -> TLSServer:
        """A running server for scenario `name` on 127.0.0.1; the caller stops it."""
        s = self.scenarios[name]
        server = _Sha1ChainServer if s.sha1_ca else TLSServer
        return server(list(s.chain), s.key, sni_names=s.sni_names).start()


class _Sha1ChainServer(TLSServer):
    """A TLSServer that serves CA certificates signed with SHA-1, which OpenSSL's
    default security level refuses to load ("ca md too weak")."""

    def __init__(self, chain: list, key, **kw) -> None:
        super().__init__(chain[:1], key, **kw)  # the leaf alone passes the check
        self._ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with tempfile.TemporaryDirectory() as d:
            cert_path, key_path = Path(d, "chain.pem"), Path(d, "key.pem")
            cert_path.write_bytes(b"".join(
                c.public_bytes(serialization.Encoding.PEM) for c in chain
            ))
            key_path.write_bytes(key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ))
            self._ctx.load_cert_chain(cert_path, key_path)


class _CaValidity(TypedDict):
    ca: bool
    not_before: dt.datetime
    not_after: dt.datetime


def build_chain_lab(tmpdir: str | Path) -> ChainLab:
    """Every scenario, with root.pem and old-device.pem written to `tmpdir`."""
    directory = Path(tmpdir)
    long_ca: _CaValidity = {"ca": True, "not_before": NOW - CA_LIFETIME, "not_after": NOW + CA_LIFETIME}
    root = make_cert("tunnel-inspector lab root", **long_ca)
    inter = make_cert("tunnel-inspector lab intermediate", root, **long_ca)
    # Incident 1 (AddTrust, 2020): the old root and its cross-certificate for the new
    # root are expired; the new root is in modern stores, only the old one on old devices.
    old_root = make_cert(
        "lab old root (AddTrust-like)", ca=True,
        not_before=NOW - 2 * CA_LIFETIME, not_after=NOW - 30 * DAY,
    )
    new_root = make_cert("lab new root (USERTrust-like)", **long_ca)
    cross = make_cert(
        "", old_root, ca=True, key=new_root.key, subject_name=new_root.cert.subject,
        not_before=NOW - CA_LIFETIME, not_after=NOW - 30 * DAY,
    )
    new_inter = make_cert("lab intermediate under the new root", new_root, **long_ca)
    unknown_root = make_cert("lab root nobody trusts", **long_ca)
    upper = make_cert("lab upper intermediate", root, **long_ca)
    lower = make_cert("lab lower intermediate", upper, **long_ca)
    # cryptography's builder refuses SHA-1: signed again from the built DER
    sha1_inter = resigned(make_cert("lab SHA-1 intermediate", root, **long_ca), root, hash_name="sha1")

    (directory / "root.pem").write_bytes(root.pem + new_root.pem)
    # The old device has had the lab root for years; it never got the new root.
    (directory / "old-device.pem").write_bytes(old_root.pem + root.pem)
    old_device = f"old-device={directory / 'old-device.pem'}"

    def host(name: str) -> str:
        return f"{name}.{DOMAIN}"

    def leaf(name: str, issuer: Issued = inter, **kw) -> Issued:
        return make_cert(host(name), issuer, sans=(host(name),), **kw)

    scenarios: list[Scenario] = []

    def add(name, served: list[Issued], present=(), absent=EVERYTHING, **kw) -> None:
        scenarios.append(Scenario(
            name, host(name), tuple(i.cert for i in served), served[0].key,
            frozenset(present), frozenset(absent), **kw,
        ))

    good = leaf("good")
    add("good", [good, inter])
    add("expired", [leaf("expired", not_before=NOW - 400 * DAY, not_after=NOW - 30 * DAY), inter],
        {"expired"},
        {"untrusted", "not-yet-valid", "expired-in-chain", "hostname-mismatch", "self-signed",
         "incomplete-chain", "expiring-soon"})
    add("not-yet-valid",
        [leaf("not-yet-valid", not_before=NOW + 30 * DAY, not_after=NOW + 400 * DAY), inter],
        {"not-yet-valid"}, {"untrusted", "expired", "hostname-mismatch", "self-signed"})
    add("wrong-host", [make_cert(host("other"), inter, sans=(host("other"),)), inter],
        {"hostname-mismatch"}, {"untrusted", "expired", "self-signed", "incomplete-chain"})
    add("self-signed", [make_cert(host("self-signed"), sans=(host("self-signed"),))],
        {"self-signed"},
        {"untrusted", "incomplete-chain", "contains-anchor", "hostname-mismatch", "expired"})
    add("untrusted-root", [leaf("untrusted-root", unknown_root), unknown_root],
        {"untrusted"},
        {"incomplete-chain", "self-signed", "contains-anchor", "hostname-mismatch", "wrong-order"})
    # Only the leaf, which says where its issuer can be downloaded (as browsers do).
    aia = x509.AuthorityInformationAccess([x509.AccessDescription(
        AuthorityInformationAccessOID.CA_ISSUERS,
        x509.UniformResourceIdentifier(f"http://aia.{DOMAIN}/intermediate.der"),
    )])
    add("incomplete-chain", [reissue(leaf("incomplete-chain"), inter, aia)],
        {"incomplete-chain"}, {"untrusted", "self-signed", "hostname-mismatch", "wrong-order"})
    add("wrong-order", [leaf("wrong-order", lower), upper, lower],
        {"wrong-order"}, {"untrusted", "extra-certs", "incomplete-chain", "contains-anchor"})
    add("anchor-included", [leaf("anchor-included"), inter, root],
        {"contains-anchor"},
        {"untrusted", "wrong-order", "extra-certs", "expired-in-chain", "self-signed"})
    add("expired-cross-root", [leaf("expired-cross-root", new_inter), new_inter, cross],
        {"expired-in-chain", "client-fails"},
        {"untrusted", "expired", "wrong-order", "extra-certs", "incomplete-chain"},
        clients=(old_device,))
    add("sha1-intermediate", [leaf("sha1-intermediate", sha1_inter), sha1_inter],
        {"weak-signature"}, {"untrusted", "weak-key", "incomplete-chain", "wrong-order"},
        sha1_ca=True)
    add("expiring-soon", [leaf("expiring-soon", not_after=NOW + 10 * DAY), inter],
        {"expiring-soon"}, {"expired", "untrusted", "hostname-mismatch"})
    add("sni-only", [leaf("sni-only"), inter], sni_names=(host("sni-only"),))
    markup = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, MARKUP),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tunnel-inspector lab"),
    ])
    add("markup-subject", [leaf("markup-subject", subject_name=markup), inter])
    return ChainLab(directory, {s.name: s for s in scenarios})
