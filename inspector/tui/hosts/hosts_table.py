"""The hosts view: one line per CONNECT host:port, worst first, for triage.

With hundreds of hosts behind one client, the question is "which hosts are broken,
for how many tunnels, and how": tunnels and flagged counts, the SNIs seen (more than
one, or "(none)", is a clue), the distinct clients, the worst chain verdict and
severity, and the finding codes with their counts. Enter lists that host's tunnels.
"""

from __future__ import annotations

from collections.abc import Hashable

from rich.style import Style
from textual.binding import Binding

from inspector.tui.messages import HostChosen
from inspector.tui.model import (
    ERROR,
    HOST_SET_CAP,
    INFO,
    NO_SEVERITY,
    WARNING,
    HostStats,
    TunnelModel,
)
from inspector.tui.table.virtual import Column, Part, VirtualTable

_SEVERITY = {ERROR: ("error", "error"), WARNING: ("warning", "warning"), INFO: ("info", "muted"),
             NO_SEVERITY: ("-", "muted")}
_VERDICT_STYLE = {"trusted": "good", "untrusted": "bad", "partial": "warning", "-": "muted"}


def _count(n: int, capped: bool) -> str:
    return f"{n}+" if capped else str(n)


class HostsTable(VirtualTable):
    COLUMNS = (
        Column("CONNECT host:port", weight=3, min_width=16, middle=True),
        Column("tunnels", 7, right=True),
        Column("flagged", 7, right=True),
        Column("SNIs seen", weight=4, min_width=12),
        Column("clients", 7, right=True, drop=2),
        Column("verdict", 9),
        Column("worst", 7, drop=3),
        Column("findings", weight=3, min_width=12),
        Column("last", 8, drop=1),
    )
    BINDINGS = [Binding("enter", "choose", "Tunnels of host")]
    EMPTY_TEXT = "no hosts yet"

    def __init__(self, model: TunnelModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.hosts: list[HostStats] = []

    def reload(self) -> None:
        """Take the model's current hosts (sorted and filtered) and redraw."""
        current = self.current_target
        self.hosts = self.model.hosts_view()
        self.rows_changed()
        if current is not None:
            for pos, h in enumerate(self.hosts):
                if h.target == current:
                    if pos != self.cursor:
                        self.move_cursor(pos, by_user=False)
                    break

    @property
    def current_target(self) -> str | None:
        return self.hosts[self.cursor].target if 0 <= self.cursor < len(self.hosts) else None

    def row_count(self) -> int:
        return len(self.hosts)

    def row_key(self, pos: int) -> Hashable:
        h = self.hosts[pos]
        return self.model.generation, h.target, h.tunnels, h.verdict

    def row_parts(self, pos: int) -> tuple[list[list[Part]], Style | None]:
        h = self.hosts[pos]
        muted = self.style("muted")
        snis: list[Part] = [(f"{len(h.snis)}: " if len(h.snis) > 1 else "", muted)]
        for i, sni in enumerate(h.top_snis(6)):
            if i:
                snis.append((", ", muted))
            if sni == "(none)" and h.sni_missing:  # as the findings say: sni-missing
                style = self.style("alarm")
            elif sni in ("(none)", "(not seen)"):
                style = muted
            elif sni in h.bad_snis:  # sni-mismatch or sni-invalid
                style = self.style("warning")
            else:
                style = None
            snis.append((sni, style))
        codes: list[Part] = []
        severity = self.model.code_severity
        # worst first, then the most frequent
        ranked = sorted(h.codes.items(), key=lambda kv: (-severity.get(kv[0], INFO), -kv[1], kv[0]))
        for i, (code, n) in enumerate(ranked):
            if i:
                codes.append(("  ", None))
            rank = severity.get(code, INFO)
            codes.append((f"{code}×{n}", self.style(_SEVERITY.get(rank, ("", "muted"))[1])))
        label, sev_style = _SEVERITY.get(h.severity, ("-", "muted"))
        cells: list[list[Part]] = [
            [(h.target, None)],
            [(str(h.tunnels), None)],
            [(str(h.flagged), None if h.flagged else muted)],
            snis,
            [(_count(len(h.clients), len(h.clients) >= HOST_SET_CAP), muted)],
            [(h.verdict, self.style(_VERDICT_STYLE.get(h.verdict, "muted")))],
            [(label, self.style(sev_style))],
            codes,
            [(h.last[11:19], muted)],
        ]
        row_style = {ERROR: "error", WARNING: "warning"}.get(h.severity)
        return cells, self.style(row_style) if row_style else None

    def action_choose(self) -> None:
        target = self.current_target
        if target is not None:
            self.post_message(HostChosen(target))
