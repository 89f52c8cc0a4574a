"""Certificates for the lab, made with cryptography alone.

cryptography's builder refuses what the lab needs to show (SHA-1 signatures, a serial
number of 0 as six roots in certifi's bundle have): `resigned` edits a built
certificate's DER and signs it again with the hazmat primitives.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import warnings
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
DAY = dt.timedelta(days=1)

# What make_key makes: the lab signs with EC and RSA keys.
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: PrivateKey

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def make_key(kind: str = "ec") -> PrivateKey:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind.startswith("rsa"):
        return rsa.generate_private_key(65537, int(kind[3:] or 2048))
    raise ValueError(kind)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tunnel-inspector lab")])


def make_cert(
    cn: str,
    issuer: Issued | None = None,
    *,
    ca: bool = False,
    sans: tuple[str, ...] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    key: PrivateKey | None = None,
    subject_name: x509.Name | None = None,
    usage: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.SERVER_AUTH,),
) -> Issued:
    """A certificate for `cn`, signed by `issuer` (self-signed when None); `usage` is
    the leaf's extended key usage (CLIENT_AUTH for a client certificate)."""
    key = key or make_key()
    subject = subject_name or _name(cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - DAY)
        .not_valid_after(not_after or NOW + 365 * DAY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    signer = issuer.key if issuer else key
    builder = builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
    )
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        builder = builder.add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), True
        )
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(list(usage)), False
        )
        names: list[x509.GeneralName] = []
        for san in sans or (cn,):
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                names.append(x509.DNSName(san))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), False)
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def reissue(issued: Issued, issuer: Issued | None, *extensions: x509.ExtensionType) -> Issued:
    """`issued` with `extensions` added (non-critical), signed again by `issuer` (itself
    when None): for the few lab certificates that need more than make_cert gives."""
    cert = issued.cert
    builder = (
        x509.CertificateBuilder()
        .subject_name(cert.subject)
        .issuer_name(cert.issuer)
        .public_key(cert.public_key())
        .serial_number(cert.serial_number)
        .not_valid_before(cert.not_valid_before_utc)
        .not_valid_after(cert.not_valid_after_utc)
    )
    for ext in cert.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    for value in extensions:
        builder = builder.add_extension(value, False)
    signer = issuer.key if issuer else issued.key
    return Issued(builder.sign(signer, hashes.SHA256()), issued.key)


# DER AlgorithmIdentifiers of the signatures `resigned` makes, by key type and hash.
_SIGNATURE_ALGORITHMS = {
    ("ec", "sha1"): bytes.fromhex("300906072a8648ce3d0401"),
    ("ec", "sha256"): bytes.fromhex("300a06082a8648ce3d040302"),
    ("rsa", "sha1"): bytes.fromhex("300d06092a864886f70d0101050500"),
    ("rsa", "sha256"): bytes.fromhex("300d06092a864886f70d01010b0500"),
}


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(value)) + value


def _elements(der: bytes) -> list[bytes]:
    """The encoded elements (tag, length and value each) inside one DER SEQUENCE."""
    def header(at: int) -> tuple[int, int]:  # (value start, value length)
        first = der[at + 1]
        if first < 0x80:
            return at + 2, first
        n = first & 0x7F
        return at + 2 + n, int.from_bytes(der[at + 2:at + 2 + n], "big")

    start, length = header(0)
    out, at = [], start
    while at < start + length:
        value_at, value_len = header(at)
        out.append(der[at:value_at + value_len])
        at = value_at + value_len
    return out


def resigned(issued: Issued, signer: Issued | None, *, hash_name: str = "sha256",
             serial: int | None = None) -> Issued:
    """`issued` signed again by `signer` (itself when None) with `hash_name` (sha1 or
    sha256), its serial number replaced by `serial` if given (0 is allowed here)."""
    key = (signer or issued).key
    kind = "ec" if isinstance(key, ec.EllipticCurvePrivateKey) else "rsa"
    algorithm = _SIGNATURE_ALGORITHMS[kind, hash_name]
    tbs = _elements(issued.cert.tbs_certificate_bytes)
    if serial is not None:
        tbs[1] = _tlv(0x02, serial.to_bytes(serial.bit_length() // 8 + 1, "big"))
    tbs[2] = algorithm  # the TBS names the signature algorithm too
    tbs_der = _tlv(0x30, b"".join(tbs))
    digest = {"sha1": hashes.SHA1(), "sha256": hashes.SHA256()}[hash_name]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(tbs_der, ec.ECDSA(digest))
    else:
        signature = key.sign(tbs_der, padding.PKCS1v15(), digest)
    der = _tlv(0x30, tbs_der + algorithm + _tlv(0x03, b"\x00" + signature))
    with warnings.catch_warnings():  # serial 0 is what was asked for
        warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning,
                                message=".*serial number.*")
        return Issued(x509.load_der_x509_certificate(der), issued.key)
