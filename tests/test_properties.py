"""Property-based tests: the parsers and the name normalisation take any bytes or text
without raising anything but their own documented errors. (bench/ runs them longer.)"""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.findings.handshake import outcome_findings
from inspector.findings.sni import sni_findings
from inspector.observe import wire
from inspector.observe.bad_request import bad_request_detail, unparsed_target
from inspector.observe.handshake import HandshakeTracker
from inspector.observe.sni import normalise_host
from inspector.records.escape import safe

EXAMPLES = int(os.environ.get("TI_HYPOTHESIS_EXAMPLES", "300"))
fast = settings(max_examples=EXAMPLES, deadline=None)

chunks = st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=12)


@fast
@given(chunks)
def test_tracker_never_raises_and_decides_once(feed):
    tr = HandshakeTracker()
    decided_at = None
    for i, (from_client, data) in enumerate(feed):
        if tr.feed(from_client, data) and decided_at is None:
            decided_at = (i, tr.outcome, tr.detail)
    tr.closed()
    assert tr.outcome is not None
    if decided_at is not None:  # a decision is final
        assert (tr.outcome, tr.detail) == decided_at[1:]
    findings = outcome_findings(tr.outcome, tr.alert, tr.detail, tr.client_hello is not None)
    assert all(f.message and f.hint for f in findings)


def _record(rtype: int, payload: bytes) -> bytes:
    return bytes([rtype, 3, 3]) + len(payload).to_bytes(2, "big") + payload


@fast
@given(st.binary(max_size=600), st.integers(1, 64))
def test_handshake_bodies_in_valid_records_parse_or_fail_cleanly(body, split):
    """Garbage inside well-formed records: only WireError is allowed out of the parsers."""
    msg = bytes([wire.CLIENT_HELLO]) + len(body).to_bytes(3, "big") + body
    data = _record(wire.HANDSHAKE, msg)
    tr = HandshakeTracker()
    for i in range(0, len(data), split):
        if tr.feed(True, data[i:i + split]):
            break
    if tr.client_hello is None and tr.decided:
        assert tr.outcome == "not-tls" and tr.detail.startswith("malformed ClientHello")
    for parse in (wire.parse_client_hello, wire.parse_server_hello, wire.parse_certificate_list):
        try:
            parse(body)
        except wire.WireError:
            pass


@fast
@given(st.binary(max_size=80))
def test_record_reader_any_bytes(data):
    reader = wire.RecordReader()
    try:
        for rec in reader.feed(data):
            assert len(rec.payload) <= wire.MAX_RECORD_PAYLOAD
    except wire.WireError:
        pass


@fast
@given(st.text(max_size=80))
def test_normalise_is_idempotent_and_ascii(name):
    n = normalise_host(name)
    if n is not None:
        assert n.isascii() and n == n.lower() and not n.endswith(".")
        assert normalise_host(n) == n


@fast
@given(st.text(max_size=60), st.one_of(st.none(), st.binary(max_size=60)))
def test_sni_findings_total_and_displayable(host, sni):
    for f in sni_findings(host, sni, sni is not None):
        shown = safe(f.message)
        assert shown.isprintable()


@fast
@given(st.binary(max_size=300))
def test_unparsed_request_lines(data):
    host, port = unparsed_target(data)
    assert isinstance(host, str) and 0 <= port < 65536
    assert safe(bad_request_detail(data or b"x")).isprintable()


@fast
@given(st.text(max_size=200))
def test_safe_output_is_printable_single_line(text):
    out = safe(text)
    assert out.isprintable() and "\n" not in out and "\x1b" not in out
