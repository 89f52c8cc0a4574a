"""The UI's model: one compact row per tunnel, the filter, the counts, per-host stats.

A record dict costs ~8 KB in memory; 100k of them would not fit the UI's budget. So
the UI keeps a `TunnelRow` per tunnel: the cells it draws, already escaped with
`inspector.records.escape.safe`, and a `ref` to re-read the full record on demand (from the
file being opened, or from the proxy's spool). Strings that repeat across tunnels (hosts,
outcomes, codes) are shared. Filtering is a list of row indices, rebuilt by one pass
over the rows; no widget is rebuilt.
"""

from __future__ import annotations

import enum
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from inspector.findings.codes import SEVERITY_RANK
from inspector.records import text
from inspector.records.escape import safe
from inspector.records.text import outcome_text, target_text

NO_SEVERITY = -1
INFO, WARNING, ERROR = SEVERITY_RANK["info"], SEVERITY_RANK["warning"], SEVERITY_RANK["error"]

# How the SNI cell looks: a missing or mismatched SNI is highlighted in the cell, as
# the findings say (records/text.py): a client that CONNECTs to an IP address rightly
# sends none (SNI_ABSENT, not highlighted).
SNI_OK, SNI_NONE, SNI_NOT_SEEN, SNI_MISMATCH, SNI_ABSENT = (
    text.SNI_OK, text.SNI_MISSING, text.SNI_NOT_SEEN, text.SNI_MISMATCH, text.SNI_ABSENT)

# Chain verdict labels, worst last (the hosts view shows the worst one seen).
VERDICTS = ("-", "trusted", "partial", "untrusted")
VERDICT_RANK = {v: i for i, v in enumerate(VERDICTS)}

# Per-host sets are for display ("3 SNIs"); past this they stop growing.
HOST_SET_CAP = 256


class _Keep(enum.Enum):
    KEEP = enum.auto()


KEEP: Final = _Keep.KEEP  # set_filter: leave this part of the filter as it is


class RecordError(ValueError):
    """A record whose fields do not have the shapes design.md gives them."""


# The memo keys hold raw values from records, which may be read from a stranger's file.
_FindingsKey = tuple[tuple[object, object], ...]  # (code, severity) per finding
_FindingsCells = tuple[tuple[tuple[str, int], ...], frozenset[str], int]  # codes, names, worst
_OutcomeKey = tuple[object, object, tuple[object, object] | None]  # outcome, version, alert
_ChainKey = tuple[tuple[object, ...], tuple[object, ...]]  # subjects, trusted per profile
# target, SNI, stack, source, codes, certificate subjects
_HaystackKey = tuple[str, str, str, str, frozenset[str], tuple[str, ...]]


@dataclass(slots=True)
class TunnelRow:
    id: str
    started: str  # RFC 3339, as recorded
    client: str
    stack: str  # the client's TLS stack (client_hello.stack), "-" when unknown
    target: str  # CONNECT host:port
    sni: str  # display text: the SNI, "(none)" or "(not seen)"
    sni_state: str  # records/text.py SNI_*
    outcome: str
    verdict: str
    codes: tuple[tuple[str, int], ...]  # (code, severity rank), worst first
    severity: int  # worst severity rank, NO_SEVERITY without findings
    flagged: bool
    haystack: str  # lowercase: target, SNI, stack, source, codes, certificate subjects
    ref: int  # where the feed can read the full record again
    source: str = ""  # the record file it came from, when several are open

    @property
    def time(self) -> str:
        return self.started[11:19]



def _rank(severity: object) -> int:
    return SEVERITY_RANK.get(severity, INFO) if isinstance(severity, str) else INFO


def chain_verdict(chain: object) -> str:
    """trusted / untrusted / partial (some trust profiles fail) / "-" when unknown."""
    if not isinstance(chain, dict):
        return "-"
    profiles = chain.get("profiles")
    if not isinstance(profiles, dict):
        return "-"
    trusted = [p.get("trusted") is True for p in profiles.values() if isinstance(p, dict)]
    if not trusted:
        return "-"
    if all(trusted):
        return "trusted"
    return "partial" if any(trusted) else "untrusted"


def chain_subjects(chain: object) -> list[str]:
    if not isinstance(chain, dict) or not isinstance(chain.get("certificates"), list):
        return []
    return [safe(c.get("subject")) for c in chain["certificates"] if isinstance(c, dict)]


def _fast_safe(value: object) -> str:
    # safe()'s own fast path, without its call overhead: ids and times are plain ASCII.
    if type(value) is str and len(value) <= 512 and value.isascii() and value.isprintable():
        return value
    return safe(value)


class RowBuilder:
    """Turns records into rows. Safe to call from one feed thread while the UI reads rows.

    Opening a recorded stream builds 100k rows; most of their cells repeat (one host,
    one outcome, the same findings), so each derived cell is memoised on the raw
    values it comes from, and equal cells share one string.
    """

    _MEMO_CAP = 100_000

    def __init__(self) -> None:
        self._targets: dict[tuple[object, object], str] = {}
        self._snis: dict[object, str] = {}
        self._findings: dict[_FindingsKey, _FindingsCells] = {}
        self._outcomes: dict[_OutcomeKey, str] = {}
        self._chains: dict[_ChainKey, tuple[str, tuple[str, ...]]] = {}
        self._haystacks: dict[_HaystackKey, str] = {}
        self._memos: tuple[dict[Any, Any], ...] = (self._targets, self._snis, self._findings, self._outcomes,
                       self._chains, self._haystacks)

    def build(self, record: Mapping[str, Any], ref: int) -> TunnelRow:
        try:
            return self._build(record, ref)
        except (KeyError, TypeError, AttributeError) as e:
            raise RecordError(f"malformed tunnel record ({type(e).__name__}: {safe(e, 80)})") from None

    def _build(self, record: Mapping[str, Any], ref: int) -> TunnelRow:
        if len(self._haystacks) > self._MEMO_CAP:
            for memo in self._memos:  # memos save time and memory; never needed for correctness
                memo.clear()
        get = record.get
        connect = record["connect"]
        target_key = (connect["host"], connect.get("port"))
        target = self._targets.get(target_key)
        if target is None:
            target = self._targets[target_key] = target_text(*target_key)

        findings = get("findings") or ()
        findings_key = tuple((f.get("code"), f.get("severity")) for f in findings)
        cells = self._findings.get(findings_key)
        if cells is None:
            # worst first: a narrow findings column still shows what matters most
            codes = tuple(sorted(((safe(code), _rank(sev)) for code, sev in findings_key),
                                 key=lambda c: -c[1]))
            names = frozenset(c for c, _ in codes)
            cells = self._findings[findings_key] = (
                codes, names, max((r for _, r in codes), default=NO_SEVERITY),
            )
        codes, names, severity = cells
        flagged = get("flagged")
        if type(flagged) is not bool:
            flagged = severity >= WARNING

        sni = get("sni")
        sni_state = text.sni_state(record, names)  # as the findings say
        if sni is None:
            sni_text = text.sni_text(record)
        else:
            cached = self._snis.get(sni)
            if cached is None:
                cached = self._snis[sni] = safe(sni)
            sni_text = cached

        hs = record["handshake"]
        alert = hs.get("alert")
        outcome_key = (hs.get("outcome"), hs.get("version"),
                       (alert.get("from"), alert.get("description")) if isinstance(alert, dict) else None)
        outcome = self._outcomes.get(outcome_key)
        if outcome is None:
            outcome = self._outcomes[outcome_key] = outcome_text(hs)

        chain = get("chain")
        subjects: tuple[str, ...]
        if chain is None:
            verdict, subjects = "-", ()
        else:
            certs = chain.get("certificates") or ()
            profiles = chain.get("profiles") or {}
            chain_key = (tuple(c.get("subject") for c in certs),
                         tuple(p.get("trusted") for p in profiles.values()))
            judged = self._chains.get(chain_key)
            if judged is None:
                judged = self._chains[chain_key] = (chain_verdict(chain), tuple(chain_subjects(chain)))
            verdict, subjects = judged

        hello = get("client_hello")
        stack = _fast_safe(hello.get("stack")) if isinstance(hello, dict) and hello.get("stack") else "-"

        source = _fast_safe(get("source")) if get("source") else ""
        hay_key = (target, sni_text if sni is not None else "", stack, source, names, subjects)
        haystack = self._haystacks.get(hay_key)
        if haystack is None:
            haystack = self._haystacks[hay_key] = "\x00".join(
                (target, hay_key[1], stack, source, *sorted(names), *subjects)).lower()

        return TunnelRow(
            _fast_safe(get("id")), _fast_safe(get("started")), _fast_safe(get("client")) or "-",
            stack, target, sni_text, sni_state, outcome, verdict, codes, severity, flagged,
            haystack, ref, source,
        )


@dataclass(slots=True)
class HostStats:
    """Everything seen for one CONNECT host:port, for the hosts view."""

    target: str
    tunnels: int = 0
    flagged: int = 0
    severity: int = NO_SEVERITY
    verdict: str = "-"
    snis: dict[str, int] = field(default_factory=dict)  # SNI cell text -> tunnels
    # SNI cells the findings called mismatched or invalid, and whether a missing SNI
    # was a finding (sni-missing): the hosts view styles from these, not from strings
    bad_snis: set[str] = field(default_factory=set)
    sni_missing: bool = False
    clients: set[str] = field(default_factory=set)  # client addresses without port
    codes: dict[str, int] = field(default_factory=dict)
    haystacks: set[str] = field(default_factory=set)
    last: str = ""

    def add(self, row: TunnelRow) -> None:
        self.tunnels += 1
        if row.flagged:
            self.flagged += 1
        if row.severity > self.severity:
            self.severity = row.severity
        if row.verdict != self.verdict and (
                VERDICT_RANK.get(row.verdict, 0) > VERDICT_RANK.get(self.verdict, 0)):
            self.verdict = row.verdict
        snis = self.snis
        n = snis.get(row.sni)
        if n is not None:
            snis[row.sni] = n + 1
        elif len(snis) < HOST_SET_CAP:
            snis[row.sni] = 1
        if row.sni_state == SNI_MISMATCH and len(self.bad_snis) < HOST_SET_CAP:
            self.bad_snis.add(row.sni)
        elif row.sni_state == SNI_NONE:
            self.sni_missing = True
        if len(self.clients) < HOST_SET_CAP:
            self.clients.add(row.client.rsplit(":", 1)[0])
        if len(self.haystacks) < HOST_SET_CAP:
            self.haystacks.add(row.haystack)
        codes = self.codes
        for code, _ in row.codes:
            codes[code] = codes.get(code, 0) + 1
        self.last = row.started

    def top_snis(self, n: int) -> list[str]:
        return sorted(self.snis, key=self.snis.__getitem__, reverse=True)[:n]

    def matches(self, needle: str) -> bool:
        return any(needle in h for h in self.haystacks)


class TunnelModel:
    """All rows, the filtered view of them, and running counts.

    Per-host stats are brought up to date only when asked for (the hosts view), so
    appending a row costs the table's share only.
    """

    def __init__(self) -> None:
        self.rows: list[TunnelRow] = []
        self.visible: list[int] = []  # indices into rows, ascending
        self.flagged_only = False
        self.needle = ""  # lowercase search text
        self.host: str | None = None  # show one CONNECT target only
        self.flagged = 0
        self.codes: dict[str, int] = {}
        self.code_severity: dict[str, int] = {}
        self.generation = 0  # bumps when rows are dropped: row indices are reused
        self._hosts: dict[str, HostStats] = {}
        self._hosts_upto = 0  # rows[:_hosts_upto] are counted in _hosts
        self._hosts_view: list[HostStats] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def matches(self, row: TunnelRow) -> bool:
        if self.flagged_only and not row.flagged:
            return False
        if self.host is not None and row.target != self.host:
            return False
        return not self.needle or self.needle in row.haystack

    def add(self, new_rows: list[TunnelRow]) -> int:
        """Append rows; returns how many of them pass the filter."""
        rows, visible, codes, code_severity = self.rows, self.visible, self.codes, self.code_severity
        matches = self.matches
        unfiltered = not (self.flagged_only or self.host is not None or self.needle)
        shown = 0
        for row in new_rows:
            index = len(rows)
            rows.append(row)
            if row.flagged:
                self.flagged += 1
            for code, rank in row.codes:
                codes[code] = codes.get(code, 0) + 1
                if rank > code_severity.get(code, -1):
                    code_severity[code] = rank
            if unfiltered or matches(row):
                visible.append(index)
                shown += 1
        return shown

    @property
    def hosts(self) -> dict[str, HostStats]:
        """Stats per CONNECT target, counting every row so far."""
        self.catch_up_hosts(len(self.rows))
        return self._hosts

    @property
    def hosts_behind(self) -> int:
        return len(self.rows) - self._hosts_upto

    def catch_up_hosts(self, limit: int) -> None:
        """Count up to `limit` more rows into the per-host stats."""
        rows, hosts = self.rows, self._hosts
        start = self._hosts_upto
        end = min(len(rows), start + limit)
        if start >= end:
            return
        for row in rows[start:end]:
            stats = hosts.get(row.target)
            if stats is None:
                stats = hosts[row.target] = HostStats(row.target)
            stats.add(row)
        self._hosts_upto = end
        self._hosts_view = None

    def set_filter(self, *, flagged_only: bool | None = None, search: str | None = None,
                   host: str | None | _Keep = KEEP) -> bool:
        """Change the filter; returns True if it changed (and `visible` was rebuilt)."""
        new = (
            self.flagged_only if flagged_only is None else flagged_only,
            self.needle if search is None else search.strip().lower(),
            self.host if host is KEEP else host,
        )
        if new == (self.flagged_only, self.needle, self.host):
            return False
        self.flagged_only, self.needle, self.host = new
        matches = self.matches
        self.visible = [i for i, row in enumerate(self.rows) if matches(row)]
        self._hosts_view = None
        return True

    def clear(self) -> None:
        self.rows = []
        self.visible = []
        self.flagged = 0
        self.codes = {}
        self.code_severity = {}
        self._hosts = {}
        self._hosts_upto = 0
        self.generation += 1
        self._hosts_view = None

    def hosts_view(self) -> list[HostStats]:
        """Hosts passing the filter, worst first (then busiest)."""
        hosts = self.hosts  # first: catching up resets the cached view
        if self._hosts_view is None:
            needle = self.needle
            view = [
                h for h in hosts.values()
                if (not self.flagged_only or h.flagged)
                and (self.host is None or h.target == self.host)
                and (not needle or h.matches(needle))
            ]
            view.sort(key=lambda h: (-h.severity, -h.flagged, -h.tunnels, h.target))
            self._hosts_view = view
        return self._hosts_view

    def position_of(self, index: int) -> int | None:
        """Where row `index` is in `visible`, or None if filtered out."""
        pos = bisect_left(self.visible, index)
        return pos if pos < len(self.visible) and self.visible[pos] == index else None
