"""The UI's model: rows from records, the filter, counts and per-host stats."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from inspector.records import text
from inspector.tui.detail import render_detail
from inspector.tui.model import (
    ERROR,
    HOST_SET_CAP,
    NO_SEVERITY,
    SNI_ABSENT,
    SNI_MISMATCH,
    SNI_NONE,
    SNI_NOT_SEEN,
    SNI_OK,
    WARNING,
    RecordError,
    RowBuilder,
    TunnelModel,
    chain_verdict,
)


def rec(i=0, host="a.test", sni="a.test", findings=(), chain=None, client_hello=True, **extra):
    return {"schema": 1, "id": f"t{i}", "started": "2025-01-01T10:11:12.000Z",
            "client": f"10.0.0.{i % 250}:{40000 + i}", "connect": {"host": host, "port": 443},
            "sni": sni, "client_hello": {"sni_present": sni is not None} if client_hello else None,
            "handshake": {"outcome": "established", "version": "TLSv1.3", "alert": None},
            "chain": chain, "findings": [dict(f) for f in findings],
            "flagged": any(f["severity"] != "info" for f in findings), **extra}


def finding(code, severity="error"):
    return {"code": code, "severity": severity, "message": f"{code} happened", "hint": "fix it"}


def build(record, ref=0):
    return RowBuilder().build(record, ref)


def test_sni_cell_states():
    assert build(rec()).sni_state == SNI_OK
    missing = build(rec(sni=None, findings=[finding("sni-missing")]))
    assert (missing.sni, missing.sni_state) == ("(none)", SNI_NONE)
    ip = build(rec(host="10.0.0.1", sni=None, findings=[finding("connect-ip", "info")]))
    assert (ip.sni, ip.sni_state) == ("(none)", SNI_ABSENT)  # no SNI for an IP is normal
    assert build(rec(sni=None, client_hello=False)).sni_state == SNI_NOT_SEEN
    assert build(rec(sni="b.test", findings=[finding("sni-mismatch")])).sni_state == SNI_MISMATCH


def test_outcome_severity_codes_and_ipv6_target():
    r = rec(host="::1", sni=None,
            findings=[finding("connect-ip", "info"), finding("expiring-soon", "warning")])
    r["handshake"] = {"outcome": "server-alert", "version": None,
                      "alert": {"from": "server", "code": 112, "description": "unrecognized_name"}}
    row = build(r)
    assert row.target == "[::1]:443"
    assert row.outcome == "server alert: unrecognized_name"
    assert row.codes == (("expiring-soon", WARNING), ("connect-ip", 0))  # worst first
    assert row.severity == WARNING and row.flagged
    assert build(rec()).severity == NO_SEVERITY


def test_chain_verdicts():
    def chain(*trusted):
        return {"source": "probe", "certificates": [],
                "profiles": {f"p{i}": {"trusted": t, "error": None} for i, t in enumerate(trusted)}}

    assert chain_verdict(None) == "-"
    assert chain_verdict(chain()) == "-"
    assert chain_verdict(chain(True, True)) == "trusted"
    assert chain_verdict(chain(True, False)) == "partial"
    assert chain_verdict(chain(False)) == "untrusted"
    assert build(rec(chain=chain(False))).verdict == "untrusted"


def test_malformed_records_raise_record_error_not_anything_else():
    for bad in ({"connect": {}, "handshake": {}}, {"connect": {"host": "h"}},
                {**rec(), "findings": ["x"]}, {**rec(), "handshake": None},
                {**rec(), "chain": {"certificates": [1], "profiles": {}}}):
        with pytest.raises(RecordError):
            build(bad)


def test_hostile_values_are_escaped_in_every_cell():
    r = rec(host="h\x1b[2J", sni="s\u202e", findings=[{**finding("c\x07"), "severity": "bogus"}],
            chain={"certificates": [{"subject": "CN=\x1b]0;x"}], "profiles": {}}, id="i\x00d")
    row = build(r)
    assert row.target == "h\\x1b[2J:443" and row.sni == "s\\u202e"
    assert row.codes == (("c\\x07", 0),)  # unknown severity counts as info
    assert row.id == "i\\x00d"
    assert "cn=\\x1b]0;x" in row.haystack


def test_the_detail_takes_any_json_value_where_a_record_has_a_string_or_bool():
    """A record read back from a file may hold a list where a code, a severity or the
    client certificate's `sent` belongs: shown as what it is, never a TypeError."""
    odd = rec(sni=None, findings=[{"code": ["sni-missing"], "severity": ["error"],
                                   "message": "odd finding", "hint": "odd hint"}])
    odd["handshake"]["client_certificate"] = {"requested": True, "sent": [True]}
    assert text.codes(odd) == set() and text.sni_state(odd) == text.SNI_ABSENT
    console = Console(width=160, file=io.StringIO(), record=True)
    console.print(render_detail(odd))
    shown = console.export_text()
    line = next(ln for ln in shown.splitlines() if "odd finding" in ln)
    assert line.split()[:2] == ["INFO", "['sni-missing']"] and "fix: odd hint" in shown
    assert "the server asked for a client certificate; no answer seen" in shown


def test_filter_is_a_list_of_indices_and_keeps_up_with_new_rows():
    model = TunnelModel()
    b = RowBuilder()
    rows = [b.build(rec(i, host=f"h{i % 3}.test", findings=[finding("expired")] if i % 2 else []), i)
            for i in range(10)]
    model.add(rows[:6])
    assert model.set_filter(flagged_only=True)
    assert model.visible == [1, 3, 5]
    assert not model.set_filter(flagged_only=True)  # unchanged: nothing rebuilt
    model.add(rows[6:])
    assert model.visible == [1, 3, 5, 7, 9]
    model.set_filter(search="H1.TEST")
    assert model.visible == [1, 7]
    assert model.position_of(7) == 1 and model.position_of(3) is None
    model.set_filter(flagged_only=False, search="", host="h2.test:443")
    assert model.visible == [2, 5, 8]
    assert model.flagged == 5 and model.codes == {"expired": 5} and model.code_severity == {"expired": ERROR}
    generation = model.generation
    model.clear()
    assert (len(model), model.visible, model.flagged, model.generation) == (0, [], 0, generation + 1)


def test_hosts_aggregate_lazily_and_bound_their_sets():
    model = TunnelModel()
    b = RowBuilder()
    # more distinct SNIs, client addresses and search texts than a host keeps
    over = HOST_SET_CAP + 50
    rows = [b.build(rec(i, sni=f"s{i}.test", client=f"10.0.{i // 250}.{i % 250}:{40000 + i}"), i)
            for i in range(over)]
    rows.append(b.build(rec(999, sni=None, findings=[finding("sni-missing")]), 999))
    assert len({r.client.rsplit(":", 1)[0] for r in rows}) > HOST_SET_CAP
    model.add(rows)
    host = model.hosts["a.test:443"]
    assert host.tunnels == len(rows) and host.flagged == 1 and host.severity == ERROR
    assert len(host.snis) == len(host.clients) == len(host.haystacks) == HOST_SET_CAP
    assert sum(host.snis.values()) == HOST_SET_CAP  # past the cap, a new SNI is not counted
    assert host.codes == {"sni-missing": 1}
    model.add([b.build(rec(1000, host="b.test", findings=[finding("expired")]), 1000)])
    view = model.hosts_view()
    assert [h.target for h in view] == ["a.test:443", "b.test:443"]  # both errors; busier first
    model.set_filter(search="b.test")
    assert [h.target for h in model.hosts_view()] == ["b.test:443"]
