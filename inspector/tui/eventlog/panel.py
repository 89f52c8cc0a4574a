"""The event-log panel: what the proxy and the UI logged, inside the UI."""

from __future__ import annotations

import logging

from rich.text import Text
from textual.widgets import RichLog

_LEVEL_STYLE = {logging.ERROR: "bold red", logging.WARNING: "yellow", logging.CRITICAL: "bold red"}


class EventLog(RichLog):
    DEFAULT_CSS = """
    EventLog {
        height: 9;
        border-top: solid $panel-lighten-2;
        background: $surface;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        # markup off: entries quote hostnames and file content
        super().__init__(id=id, max_lines=2000, markup=False, highlight=False, wrap=False)
        self.border_title = "event log"

    def add(self, level: int, text: str) -> None:
        """`text` must already be escaped (the router does it)."""
        self.write(Text(text, style=_LEVEL_STYLE.get(level, "")))
