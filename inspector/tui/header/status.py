"""The header: where records come from, what the view shows, and the counts."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text
from textual.widgets import Static

from inspector.records.escape import safe
from inspector.records.text import plural
from inspector.tui.model import ERROR, INFO, WARNING, TunnelModel

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


SOURCE_MAX = 44  # the feed's status is cut here; the feed stats come after it


def status_text(model: TunnelModel, status: Status) -> Text:
    """Two lines, never wrapped: state, filter, where from, feed stats; then counts.

    A narrow terminal cuts the end of a line, so what the view shows (paused, filtered)
    comes before the address, which starts early enough to stay readable at 80 columns.
    """
    source = safe(status.source)
    if len(source) > SOURCE_MAX:
        source = source[: SOURCE_MAX - 1] + "…"
    parts = []
    if status.paused:
        parts.append(Text(f" ❚❚ PAUSED: {status.waiting:,} waiting ", "bold black on yellow"))
    elif status.view == "tunnels":
        # the table's place, not the feed's: "following FILE" is the feed's own status
        parts.append(Text("● at newest", "green") if status.follow
                     else Text("○ not following (end resumes)", "dim"))
    if status.view != "tunnels":
        parts.append(Text(f"view: {status.view}", "bold"))
    filters = []
    if model.flagged_only:
        filters.append("flagged only")
    if model.needle:
        filters.append(f"search “{safe(model.needle, 40)}”")
    if model.host is not None:
        filters.append(f"host {model.host}")
    if filters:
        parts.append(Text.assemble(("filter: ", "dim"), (", ".join(filters), "bold cyan")))
    parts.append(Text(source, "bold red" if status.failed else "bold"))
    if status.stats:
        parts.append(Text("  ".join(f"{safe(k).replace('_', ' ')} {safe(v)}"
                                    for k, v in status.stats.items()), "dim"))
    top = Text.assemble((" tunnel-inspector ", "bold reverse"), "  ", Text("   ").join(parts))

    counts = Text()
    counts.append(f" {plural(len(model.rows), 'tunnel')}", "bold")
    counts.append("  ")
    counts.append(f"{model.flagged:,} flagged", "bold red" if model.flagged else "dim")
    shown = len(model.visible)
    if shown != len(model.rows) and status.view == "tunnels":
        counts.append(f"  ({shown:,} shown)", "dim")
    if status.view == "hosts":
        counts.append(f"  {plural(len(model.hosts), 'host')}", "bold")
    if model.codes:
        counts.append("   ")
        severity = model.code_severity
        ranked = sorted(model.codes.items(), key=lambda kv: (-severity.get(kv[0], 0), -kv[1], kv[0]))
        for i, (code, n) in enumerate(ranked):
            if i:
                counts.append("  ")
            counts.append(f"{code} {n:,}", _CODE_STYLE.get(model.code_severity.get(code, INFO), ""))
    text = Text("\n").join([top, counts])
    text.no_wrap, text.overflow = True, "ellipsis"  # a long line is cut, never pushes line 2 away
    return text


class StatusHeader(Static):
    DEFAULT_CSS = """
    StatusHeader {
        height: 2;
        background: $panel;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """
