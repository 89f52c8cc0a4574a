"""The header: where records come from, what the view shows, and the counts."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text
from textual.widgets import Static

from inspector.escape import safe

from ..model import ERROR, INFO, WARNING, TunnelModel

_CODE_STYLE = {ERROR: "bold red", WARNING: "yellow", INFO: "dim"}


@dataclass
class Status:
    source: str = "starting…"  # the feed's status: "listening on 127.0.0.1:8080"
    failed: bool = False
    view: str = "tunnels"
    follow: bool = True
    paused: bool = False
    waiting: int = 0
    stats: dict = field(default_factory=dict)


def status_text(model: TunnelModel, status: Status) -> Text:
    """Two lines: state and filter; then counts, flagged and per-code."""
    top = Text(no_wrap=True, overflow="ellipsis")
    top.append(" tunnel-inspector ", "bold reverse")
    top.append("  ")
    top.append(safe(status.source), "bold red" if status.failed else "bold")
    top.append("   ")
    if status.paused:
        top.append(f" ❚❚ PAUSED: {status.waiting:,} waiting ", "bold black on yellow")
    elif status.view == "tunnels":
        top.append("● following" if status.follow else "○ not following (end resumes)",
                   "green" if status.follow else "dim")
    top.append(f"   view: {status.view}", "dim")
    filters = []
    if model.flagged_only:
        filters.append("flagged only")
    if model.needle:
        filters.append(f"search “{safe(model.needle, 40)}”")
    if model.host is not None:
        filters.append(f"host {model.host}")
    if filters:
        top.append("   filter: ", "dim")
        top.append(", ".join(filters), "bold cyan")
    if status.stats:
        top.append("   ")
        top.append("  ".join(f"{safe(k).replace('_', ' ')} {safe(v)}" for k, v in status.stats.items()), "dim")

    counts = Text(no_wrap=True, overflow="ellipsis")
    counts.append(f" {len(model.rows):,} tunnels", "bold")
    counts.append("  ")
    counts.append(f"{model.flagged:,} flagged", "bold red" if model.flagged else "dim")
    shown = len(model.visible)
    if shown != len(model.rows) and status.view == "tunnels":
        counts.append(f"  ({shown:,} shown)", "dim")
    if status.view == "hosts":
        counts.append(f"  {len(model.hosts):,} hosts", "bold")
    if model.codes:
        counts.append("   ")
        ranked = sorted(model.codes.items(), key=lambda kv: (-model.code_severity.get(kv[0], 0), -kv[1], kv[0]))
        for i, (code, n) in enumerate(ranked):
            if i:
                counts.append("  ")
            counts.append(f"{code} {n:,}", _CODE_STYLE.get(model.code_severity.get(code, INFO), ""))
    return Text("\n").join([top, counts])


class StatusHeader(Static):
    DEFAULT_CSS = """
    StatusHeader {
        height: 2;
        background: $panel;
    }
    """
