"""Every real TLS stack installed here, through the real proxy to the lab: a good host,
an untrusted chain, an expired leaf, a host name the certificate does not cover, no
SNI and another SNI to a server that needs the right one, in TLS 1.3 and capped at
TLS 1.2. Each record must say what the client experienced, and name the client's stack.

What each stack does is in EXPECTED (measured here, and the README's table): how it
rejects a certificate on the wire, and whether it can send no SNI.
"""

from __future__ import annotations

import pytest

from inspector.lab.chains import build_chain_lab
from inspector.observe.handshake import CLIENT_LEFT_SILENTLY, CLOSED_AFTER_HANDSHAKE

from .real_stacks import RUNNERS, Case, ToolMissing
from .support import ProxyProcess

# case id -> (lab scenario, SNI: "host" | "none" | "other", highest version)
CASES = {
    "good-1.3": ("good", "host", "1.3"),
    "good-1.2": ("good", "host", "1.2"),
    "untrusted-1.3": ("untrusted-root", "host", "1.3"),
    "untrusted-1.2": ("untrusted-root", "host", "1.2"),
    "expired-1.3": ("expired", "host", "1.3"),
    "expired-1.2": ("expired", "host", "1.2"),
    "wrong-host-1.3": ("wrong-host", "host", "1.3"),
    "wrong-host-1.2": ("wrong-host", "host", "1.2"),
    "no-sni-1.3": ("sni-only", "none", "1.3"),
    "no-sni-1.2": ("sni-only", "none", "1.2"),
    "other-sni-1.3": ("sni-only", "other", "1.3"),
}
# What stack each client's ClientHello must be identified as.
STACK_OF = {"curl": "openssl", "openssl": "openssl", "python": "openssl", "node": "openssl",
            "go": "go", "java": "java", "erlang": "erlang-otp", "gnutls": "gnutls"}
# curl sends the URL's host as SNI whatever it is asked: it has no no-SNI or other-SNI case.
SKIPS_SNI_CASES = {"curl"}
CLIENTS = list(RUNNERS)
SCENARIOS = sorted({s for s, _, _ in CASES.values()})


def _cases_of(client: str) -> list[str]:
    return [c for c, (_, sni, _) in CASES.items()
            if not (client in SKIPS_SNI_CASES and sni != "host")]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = build_chain_lab(tmp_path_factory.mktemp("stack-lab"))
    servers = {name: lab.start(name) for name in SCENARIOS}
    yield lab, servers
    for s in servers.values():
        s.stop()


@pytest.fixture(scope="module")
def proxy(lab, tmp_path_factory):
    """One proxy for every stack: CONNECT host:port is unique per (client, case) and
    mapped by --connect-to to the scenario's server."""
    chain_lab, servers = lab
    mapping = []
    for ci, client in enumerate(CLIENTS):
        for ki, case in enumerate(CASES):
            scenario = CASES[case][0]
            host = chain_lab.scenarios[scenario].hostname
            mapping += ["--connect-to", f"{host}:{_port(ci, ki)}:127.0.0.1:{servers[scenario].port}"]
    p = ProxyProcess(["--trust", str(chain_lab.root_pem), *mapping],
                     tmp_path_factory.mktemp("stack-proxy") / "tunnels.jsonl")
    yield p
    p.stop()


def _port(client_index: int, case_index: int) -> int:
    return 20000 + 100 * client_index + case_index


_runs: dict[str, dict] = {}


@pytest.fixture
def run(lab, proxy, tmp_path_factory):
    """The client's results and records, per case (each client runs once per module)."""
    chain_lab, _ = lab

    def get(client: str) -> dict[str, tuple]:
        if client not in _runs:
            ci = CLIENTS.index(client)
            cases = []
            for case in _cases_of(client):
                scenario, sni, version = CASES[case]
                host = chain_lab.scenarios[scenario].hostname
                cases.append(Case(case, host, _port(ci, list(CASES).index(case)),
                                  {"host": host, "none": None, "other": "other.lab.test"}[sni],
                                  version, str(chain_lab.root_pem)))
            try:
                results = RUNNERS[client](cases, proxy.port, tmp_path_factory.mktemp(client))
            except ToolMissing as e:
                _runs[client] = {"missing": str(e)}
                return _runs[client]
            ports = {c.port: c.id for c in cases}
            records = {}
            for _ in range(3):  # each case's record, once its verdict is in (bounded)
                for rec in proxy.records(0, timeout=0):
                    if rec["connect"]["port"] in ports:
                        records[ports[rec["connect"]["port"]]] = rec
                if len(records) == len(cases):
                    break
                proxy.records(len(proxy.records(0, timeout=0)) + len(cases) - len(records),
                              timeout=10)
            _runs[client] = {c.id: (results[c.id], records.get(c.id)) for c in cases}
        return _runs[client]

    return get


def _codes(rec: dict) -> set[str]:
    return {f["code"] for f in rec["findings"] if f["severity"] != "info"}


# How each client rejects a certificate, per TLS version: an alert in clear (its
# description per failure), an encrypted alert, a close without a word before its
# Finished ("silent"), or a complete handshake, then a close ("after").
_CLEAR = {"untrusted": "unknown_ca", "expired": "certificate_expired",
          "wrong-host": "bad_certificate"}
REJECTS = {
    "curl": {"1.3": {**_CLEAR, "wrong-host": "after"}, "1.2": {**_CLEAR, "wrong-host": "after"}},
    "openssl": {"1.3": _CLEAR, "1.2": _CLEAR},
    "python": {"1.3": _CLEAR, "1.2": _CLEAR},
    "node": {"1.3": "silent", "1.2": "after"},
    "go": {"1.3": "encrypted", "1.2": "bad_certificate"},
    "java": {"1.3": "encrypted", "1.2": {"untrusted": "certificate_unknown",
                                         "expired": "certificate_expired",
                                         "wrong-host": "certificate_unknown"}},
    "erlang": {"1.3": "encrypted", "1.2": {"untrusted": "unknown_ca",
                                           "expired": "certificate_expired",
                                           "wrong-host": "handshake_failure"}},
    "gnutls": {"1.3": "encrypted", "1.2": "bad_certificate"},
}
CHAIN_CODE = {"untrusted": "untrusted", "expired": "expired", "wrong-host": "hostname-mismatch"}


def expected(client: str, case: str) -> tuple[str, str | None, set[str], str | None]:
    """(outcome, alert description, non-info finding codes, detail) the record must have."""
    kind, version = case.rsplit("-", 1)
    if kind == "good":
        return "established", None, set(), None
    if kind == "no-sni":
        return ("server-alert", "unrecognized_name", {"server-alert", "sni-missing", "sni-required"},
                "server sent alert unrecognized_name")
    if kind == "other-sni":
        return ("server-alert", "unrecognized_name",
                {"server-alert", "sni-mismatch", "sni-required", "hostname-mismatch"},
                "server sent alert unrecognized_name")
    how = REJECTS[client][version]
    how = how[kind] if isinstance(how, dict) else how
    chain = CHAIN_CODE[kind]
    if how == "after":
        return "established", None, {chain}, CLOSED_AFTER_HANDSHAKE
    if how == "silent":
        return "closed", None, {"client-rejected-certificate", chain}, CLIENT_LEFT_SILENTLY
    return ("client-alert", how, {"client-rejected-certificate", chain},
            f"client sent alert {how}")


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("case", list(CASES))
def test_each_stack_is_read_as_the_client_experienced_it(run, client, case):
    got = run(client)
    if "missing" in got:
        pytest.fail(got["missing"])
    if case not in got:
        assert client in SKIPS_SNI_CASES and CASES[case][1] != "host"
        return
    result, rec = got[case]
    assert rec is not None, f"no record for {client} {case}"
    outcome, alert, codes, detail = expected(client, case)
    # what the client itself says: only good hosts work
    assert result.ok == (outcome == "established" and detail is None), result.error
    hs = rec["handshake"]
    assert hs["outcome"] == outcome
    assert (hs["alert"] or {}).get("description") == alert
    assert hs["detail"] == detail
    assert _codes(rec) == codes
    ch = rec["client_hello"]
    assert ch["stack"] == STACK_OF[client] and ch["stack_evidence"]
    assert ch["ja4"].startswith(("t13" if CASES[case][2] == "1.3" else "t12")
                                + ("i" if CASES[case][1] == "none" else "d"))


def _finding(rec: dict, code: str) -> dict:
    return next(f for f in rec["findings"] if f["code"] == code)


def test_otp_over_a_connected_socket_is_the_hackney_incident(run):
    """ssl:connect on the CONNECTed socket without server_name_indication: no SNI, the
    server refuses, and the hint says what fixes it in OTP/hackney."""
    got = run("erlang")
    if "missing" in got:
        pytest.fail(got["missing"])
    _, rec = got["no-sni-1.3"]
    assert rec["sni"] is None and rec["client_hello"]["sni_present"] is False
    hint = _finding(rec, "sni-missing")["hint"]
    assert "ssl:connect" in hint and "server_name_indication" in hint
    # OTP's bare handshake_failure for a host name it refuses: the client rejected it
    _, rec = got["wrong-host-1.2"]
    f = _finding(rec, "client-rejected-certificate")
    assert "Erlang/OTP" in f["hint"] and "not the server" in f["hint"]


def test_java_padded_tls13_alert_and_its_hints(run):
    got = run("java")
    if "missing" in got:
        pytest.fail(got["missing"])
    for case in ("untrusted-1.3", "expired-1.3", "wrong-host-1.3"):
        f = _finding(got[case][1], "client-rejected-certificate")
        assert "35 bytes" in f["message"] and "JSSE" in f["hint"]
    assert "SNIHostName" in _finding(got["no-sni-1.3"][1], "sni-missing")["hint"]
