"""The chain verdict (pure) and the trust profiles: every lab scenario, the mapping of
cryptography's errors to findings, and the corner cases (unparseable, empty, 50 certs)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import Store

from inspector.chain.trust import TrustError, TrustProfile, load_client_profile, load_profile
from inspector.chain.verify import ChainVerdict, verify_chain
from inspector.findings.codes import CODES, ERROR, INFO, SEVERITY_RANK, is_flagged
from inspector.lab.chains import MARKUP, build_chain_lab
from inspector.lab.pki import DAY, NOW, Issued, make_cert, make_key

HOST = "site.lab.test"


def der(*issued: Issued) -> list[bytes]:
    return [i.der for i in issued]


def profile(name: str, *roots: Issued) -> TrustProfile:
    certs = tuple(r.cert for r in roots)
    return TrustProfile(name, certs, Store(list(certs)))


def codes(v: ChainVerdict) -> set[str]:
    return {f.code for f in v.findings}


def only(v: ChainVerdict, code: str):
    [f] = [f for f in v.findings if f.code == code]
    return f


def judge(chain, trust, clients=(), sni=HOST, connect_host=HOST, **kw) -> ChainVerdict:
    return verify_chain(chain, sni=sni, connect_host=connect_host, trust=list(trust),
                        clients=list(clients), now=dt.datetime.now(dt.timezone.utc), **kw)


@pytest.fixture(scope="module")
def pki():
    long = {"ca": True, "not_before": NOW - 3650 * DAY, "not_after": NOW + 3650 * DAY}
    root = make_cert("Test Root", **long)
    inter = make_cert("Test Intermediate", root, **long)
    leaf = make_cert(HOST, inter, sans=(HOST,))
    return {"root": root, "inter": inter, "leaf": leaf, "trust": profile("lab", root)}


# --- every lab scenario ------------------------------------------------------------


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    return build_chain_lab(tmp_path_factory.mktemp("chain-lab"))


@pytest.fixture(scope="module")
def lab_verdicts(lab):
    trust = [load_profile(str(lab.root_pem), name="root")]
    return {
        name: verify_chain(
            s.chain_der, sni=s.hostname, connect_host=s.hostname, trust=trust,
            clients=[load_client_profile(c) for c in s.clients],
            now=dt.datetime.now(dt.timezone.utc),
        )
        for name, s in lab.scenarios.items()
    }


LAB_SCENARIOS = [
    "good", "expired", "not-yet-valid", "wrong-host", "self-signed", "untrusted-root",
    "incomplete-chain", "wrong-order", "anchor-included", "expired-cross-root",
    "sha1-intermediate", "expiring-soon", "sni-only", "markup-subject",
]


@pytest.mark.parametrize("name", LAB_SCENARIOS)
def test_lab_scenario_verdict(lab, lab_verdicts, name):
    scenario, verdict = lab.scenarios[name], lab_verdicts[name]
    found = codes(verdict)
    assert scenario.present <= found, verdict.findings
    assert not scenario.absent & found, verdict.findings
    # flagged exactly when the scenario expects a warning or an error
    assert is_flagged(verdict.findings) == any(CODES[c] != INFO for c in scenario.present)


def test_every_finding_says_what_to_fix(lab_verdicts):
    for verdict in lab_verdicts.values():
        for f in verdict.findings:
            assert f.code in CODES and f.message and f.hint and "validation failed" not in f.message


def test_good_chain_record_object(lab, lab_verdicts):
    out = lab_verdicts["good"].to_dict("probe")
    assert set(out) == {"source", "certificates", "profiles", "path"} and out["source"] == "probe"
    leaf, inter = out["certificates"]
    assert set(leaf) == {"subject", "issuer", "not_before", "not_after", "sha256", "key",
                         "signature", "in_path"}
    assert leaf["subject"] == "O=tunnel-inspector lab,CN=good.lab.test"
    assert leaf["issuer"] == inter["subject"]
    assert leaf["key"] == "EC secp256r1" and leaf["signature"] == "ecdsa-with-SHA256"
    assert leaf["not_after"].endswith("Z") and "T" in leaf["not_before"]
    assert leaf["sha256"] == lab.scenarios["good"].chain[0].fingerprint(hashes.SHA256()).hex()
    assert leaf["in_path"] and inter["in_path"]
    assert out["path"][:2] == [leaf["sha256"], inter["sha256"]] and len(out["path"]) == 3
    assert out["profiles"] == {"root": {"trusted": True, "error": None, "kind": "trust"}}


def test_expired_cross_root_is_the_incident(lab, lab_verdicts):
    """Modern path valid, served walk through the expired cross-certificate, old device fails."""
    verdict = lab_verdicts["expired-cross-root"]
    cross = lab.scenarios["expired-cross-root"].chain[2]
    day = cross.not_valid_after_utc.strftime("%Y-%m-%d")
    f = only(verdict, "expired-in-chain")
    assert f.severity == "warning"
    assert f.hint.startswith(f"the server sends {cross.subject.rfc4514_string()}, expired {day}")
    assert "OpenSSL 1.0.x" in f.hint and "Android <= 5" in f.hint
    assert f.hint.endswith("serve leaf + intermediate only")
    out = verdict.to_dict("observed")
    assert out["profiles"]["root"]["trusted"] is True
    assert [c["in_path"] for c in out["certificates"]] == [True, True, False]  # via the new root
    old = out["profiles"]["old-device"]
    assert old == {"trusted": False, "kind": "client", "error": old["error"]}
    assert "expired on " + day in old["error"] and "certificate #2" in old["error"]
    assert "old-device" in only(verdict, "client-fails").message


def test_sha1_intermediate_is_rejected_as_weak_signature(lab_verdicts):
    verdict = lab_verdicts["sha1-intermediate"]
    f = only(verdict, "weak-signature")
    assert f.severity == ERROR and "ecdsa-with-SHA1" in f.message
    out = verdict.to_dict("probe")
    assert out["certificates"][1]["signature"] == "ecdsa-with-SHA1"
    assert "SHA1" in out["profiles"]["root"]["error"] and "path" not in out


def test_markup_subject_is_kept_verbatim(lab_verdicts):
    leaf = lab_verdicts["markup-subject"].to_dict("probe")["certificates"][0]
    # RFC 4514 escapes only ; , + etc.; the markup and the escape sequence stay as they are
    assert leaf["subject"].startswith("O=tunnel-inspector lab,CN=[bold red]evil[/]\x1b]0")
    assert leaf["subject"].endswith("pwned\x07")


def test_markup_subject_reaches_messages_unescaped(pki):
    evil = make_cert("x", subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, MARKUP)]),
                     ca=True)
    v = judge(der(make_cert(HOST, evil, sans=(HOST,)), evil), [pki["trust"]])
    assert MARKUP.replace(";", "\\;") in only(v, "untrusted").message


# --- cryptography's errors, re-explained --------------------------------------------


def test_untrusted_root_self_signed_and_missing_intermediate_are_told_apart(pki):
    trust = [pki["trust"]]
    unknown = make_cert("Unknown Root", ca=True)
    served_root = judge(der(make_cert(HOST, unknown, sans=(HOST,)), unknown), trust)
    assert "the chain ends at the root" in only(served_root, "untrusted").message
    self_signed = judge(der(make_cert(HOST, sans=(HOST,))), trust)
    assert codes(self_signed) == {"self-signed"}
    # no AIA and an issuer no store knows: a missing intermediate or a private root
    missing = judge(der(pki["leaf"]), [profile("other", unknown)])
    assert codes(missing) == {"untrusted"}
    assert "which the server does not send and no trust store holds" in missing.findings[0].message
    # the same leaf when some store knows its issuer: the chain is incomplete
    known = judge(der(pki["leaf"]), [profile("other", unknown)], [profile("intermediates", pki["inter"])])
    assert "incomplete-chain" in codes(known) and "untrusted" not in codes(known)


def test_expired_leaf_from_an_unknown_ca_is_both(pki):
    unknown = make_cert("Unknown Root", ca=True, not_before=NOW - 3650 * DAY)
    leaf = make_cert(HOST, unknown, sans=(HOST,), not_before=NOW - 90 * DAY, not_after=NOW - DAY)
    assert codes(judge(der(leaf, unknown), [pki["trust"]])) == {"expired", "untrusted"}


def test_expired_intermediate_without_alternative_is_untrusted(pki):
    root = pki["root"]
    inter = make_cert("Old Intermediate", root, ca=True, not_before=NOW - 900 * DAY,
                      not_after=NOW - 2 * DAY)
    leaf = make_cert(HOST, inter, sans=(HOST,), not_before=NOW - 100 * DAY)
    v = judge(der(leaf, inter), [pki["trust"]])
    assert "expired-in-chain" not in codes(v)  # no valid path: it is the reason, not a warning
    assert "Old Intermediate" in only(v, "untrusted").message and "expired on" in v.findings[0].message


def test_rsa_1024_leaf_is_accepted_but_weak(pki):
    leaf = make_cert(HOST, pki["inter"], sans=(HOST,), key=make_key("rsa1024"))
    v = judge(der(leaf, pki["inter"]), [pki["trust"]])
    assert codes(v) == {"weak-key"} and only(v, "weak-key").severity == "warning"
    assert "RSA 1024" in only(v, "weak-key").message and v.profiles[0].trusted


def test_rsa_1024_issuing_key_is_rejected_as_weak_key(pki):
    inter = make_cert("Weak Intermediate", pki["root"], ca=True, key=make_key("rsa1024"))
    v = judge(der(make_cert(HOST, inter, sans=(HOST,)), inter), [pki["trust"]])
    assert codes(v) == {"weak-key"} and only(v, "weak-key").severity == ERROR
    assert "RSA 1024" in v.profiles[0].error


def test_leaf_without_subject_alt_name(pki):
    key = make_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
        .issuer_name(pki["inter"].cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - DAY)
        .not_valid_after(NOW + 90 * DAY)
        .sign(pki["inter"].key, hashes.SHA256())
    )
    v = judge([cert.public_bytes(serialization.Encoding.DER), pki["inter"].der], [pki["trust"]])
    assert codes(v) == {"hostname-mismatch"}
    assert "no subjectAltName" in v.findings[0].message and "no subjectAltName" in v.profiles[0].error


# --- names ---------------------------------------------------------------------------


def test_names_sni_connect_host_and_wildcards(pki):
    inter, trust = pki["inter"], [pki["trust"]]
    chain = der(pki["leaf"], inter)
    no_sni = judge(chain, trust, sni=None, connect_host="other.lab.test")
    assert "sent no SNI" in only(no_sni, "hostname-mismatch").message
    assert "other.lab.test" in only(no_sni, "hostname-mismatch").message
    assert codes(judge(chain, trust, sni=None, connect_host=HOST)) == set()
    sni_wrong = judge(chain, trust, sni="other.lab.test", connect_host=HOST)
    assert "does cover the CONNECT host" in only(sni_wrong, "hostname-mismatch").message
    connect_wrong = judge(chain, trust, sni=HOST, connect_host="other.lab.test")
    assert "but not the CONNECT host other.lab.test" in only(connect_wrong, "hostname-mismatch").message
    assert connect_wrong.profiles[0].trusted  # the client checks the name it sent
    assert codes(judge(chain, trust, sni=HOST, connect_host="127.0.0.1")) == set()

    wildcard = der(make_cert("*.lab.test", inter, sans=("*.lab.test",)), inter)
    assert codes(judge(wildcard, trust, sni="Any.LAB.test.")) == set()
    assert codes(judge(wildcard, trust, sni="a.b.lab.test")) == {"hostname-mismatch"}
    by_ip = der(make_cert("ip", inter, sans=("127.0.0.1",)), inter)
    assert codes(judge(by_ip, trust, sni=None, connect_host="127.0.0.1")) == set()


def test_wrong_host_keeps_the_validated_path(pki):
    v = judge(der(pki["leaf"], pki["inter"]), [pki["trust"]], sni="other.lab.test",
              connect_host="other.lab.test")
    out = v.to_dict("probe")
    assert out["profiles"]["lab"]["trusted"] is False and len(out["path"]) == 3
    assert out["profiles"]["lab"]["error"].startswith("the certificate does not cover other.lab.test")


# --- structure -------------------------------------------------------------------------


def test_extra_and_duplicate_certificates(pki):
    stranger = make_cert("Stranger", ca=True)
    v = judge(der(pki["leaf"], pki["inter"], stranger, pki["inter"]), [pki["trust"]])
    assert codes(v) == {"extra-certs"} and not is_flagged(v.findings)
    assert "#2 O=tunnel-inspector lab,CN=Stranger" in v.findings[0].message and "#3" in v.findings[0].message


def test_no_trust_profiles_no_untrusted(pki):
    v = judge(der(pki["leaf"], pki["inter"]), [])
    assert codes(v) == set() and v.to_dict("probe")["profiles"] == {}


def test_findings_are_sorted_errors_first(pki):
    leaf = make_cert(HOST, pki["inter"], sans=(HOST,), not_before=NOW - 90 * DAY, not_after=NOW - DAY)
    stranger = make_cert("Stranger", ca=True)
    v = judge(der(leaf, stranger, pki["inter"]), [pki["trust"]])
    ranks = [SEVERITY_RANK[f.severity] for f in v.findings]
    assert ranks == sorted(ranks, reverse=True) and v.findings[0].code == "expired"


# --- corner cases ----------------------------------------------------------------------


def test_empty_chain(pki):
    v = judge([], [pki["trust"]], [profile("phone", pki["root"])])
    assert codes(v) == {"untrusted"} and "no certificate" in v.findings[0].message
    out = v.to_dict("probe")
    assert out["certificates"] == [] and "path" not in out
    assert out["profiles"]["phone"] == {"trusted": False, "error": v.findings[0].message, "kind": "client"}


@pytest.mark.parametrize("bad", [b"", b"\x00garbage", b"0\x82\x01\x00truncated"])
def test_unparseable_certificate_is_a_finding_not_a_traceback(pki, bad):
    v = judge([pki["leaf"].der, bad, pki["inter"].der], [pki["trust"]])
    assert codes(v) == {"untrusted"} and "#1" in v.findings[0].message
    out = v.to_dict("observed")
    assert out["certificates"][1]["subject"] == "unparseable"
    assert out["certificates"][1]["issuer"] is None and out["certificates"][0]["in_path"] is False
    assert out["profiles"]["lab"]["trusted"] is False


def test_truncated_real_certificate(pki):
    v = judge([pki["leaf"].der[:-20]], [pki["trust"]])
    assert "#0" in only(v, "untrusted").message


# The thread method ends the run even inside cryptography's native code, which the
# default signal method cannot interrupt: an unbounded verifier fails here, never hangs.
@pytest.mark.timeout(30, method="thread")
def test_fifty_certificates_are_bounded(pki, monkeypatch):
    """The path builder tries every combination of interchangeable issuers: 50 served
    copies of one CA (same name, same key) would take hours unless the work is bounded.
    The timeout above is the bound; the spy shows what the path builder was handed."""
    from inspector.chain import verify

    handed = []
    original = verify._Served.intermediates

    def spy(self):
        out = original(self)
        handed.append(len(out))
        return out

    monkeypatch.setattr(verify._Served, "intermediates", spy)
    key = make_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Copy CA")])
    copies = [make_cert("Copy CA", ca=True, key=key, subject_name=name) for _ in range(49)]
    leaf = make_cert(HOST, Issued(copies[0].cert, key), sans=(HOST,))
    v = judge(der(leaf, *copies), [pki["trust"], profile("copy", copies[0])])
    assert handed == [1]  # one of the 49 interchangeable copies
    assert v.profiles[1].trusted and "and 43 more" in only(v, "extra-certs").message

    # 50 distinct intermediates, deeper than any client goes
    issuer, chain = pki["root"], []
    for i in range(49):
        issuer = make_cert(f"Level {i}", issuer, ca=True)
        chain.insert(0, issuer)
    v = judge(der(make_cert(HOST, issuer, sans=(HOST,)), *chain), [pki["trust"]])
    assert handed[-1] == 49
    assert not v.profiles[0].trusted and len(v.to_dict("probe")["certificates"]) == 50


# --- trust profiles ---------------------------------------------------------------------


def test_load_profile_errors(tmp_path):
    with pytest.raises(TrustError, match="does not exist"):
        load_profile(str(tmp_path / "missing.pem"))
    (tmp_path / "empty.pem").write_bytes(b"")
    with pytest.raises(TrustError, match="no PEM certificates"):
        load_profile(str(tmp_path / "empty.pem"))
    (tmp_path / "text.pem").write_text("not a certificate\n")
    with pytest.raises(TrustError, match="no PEM certificates"):
        load_profile(str(tmp_path / "text.pem"))
    (tmp_path / "bad.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(TrustError, match="no certificate that can be parsed"):
        load_profile(str(tmp_path / "bad.pem"))
    with pytest.raises(TrustError, match="cannot read"):
        load_profile(str(tmp_path))
    with pytest.raises(TrustError, match="NAME=PATH"):
        load_client_profile(str(tmp_path / "bad.pem"))
    assert issubclass(TrustError, ValueError)  # callers that catch ValueError still work


def test_load_profile_skips_unparseable_and_is_loaded_once(tmp_path, pki):
    bundle = tmp_path / "bundle.pem"
    junk = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    bundle.write_bytes(pki["root"].pem + junk + pki["inter"].pem)
    p = load_profile(str(bundle))
    assert p.name == str(bundle) and len(p.certificates) == 2 and p.skipped == 1
    assert load_profile(str(bundle)).store is p.store  # parsed once
    bundle.write_bytes(pki["root"].pem)  # an edited file is read again
    assert len(load_profile(str(bundle)).certificates) == 1
    client = load_client_profile(f"old-phone={bundle}")
    assert client.name == "old-phone" and client.certificates[0] == pki["root"].cert


@pytest.mark.parametrize("spec", ["mozilla", "system"])
def test_named_stores(spec):
    p = load_profile(spec)
    assert p.name == spec and len(p.certificates) > 50


def test_a_trust_profile_indexes_its_roots_by_subject_and_key():
    """The look-ups a verdict makes in a bundle of 100+ roots: by the issuer's name, and
    whether a served certificate is itself one of the roots (same name and key)."""
    from inspector.chain.trust import load_profile, spki

    mozilla = load_profile("mozilla")
    root = mozilla.certificates[0]
    child = make_cert("leaf.test", sans=("leaf.test",))
    assert root in mozilla.issuers_of(root)  # a root names itself as issuer
    assert mozilla.issuers_of(x509.load_der_x509_certificate(child.der)) == ()
    assert (root.subject, spki(root)) in mozilla.held
    assert len(mozilla.held) == len(mozilla.certificates)
