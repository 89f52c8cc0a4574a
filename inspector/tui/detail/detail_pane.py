"""The detail pane: the selected tunnel, explained (see render.py)."""

from __future__ import annotations

from rich.console import RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from inspector.tui.detail.render import render_detail


class DetailPane(VerticalScroll, can_focus=True):
    """Shows one record; `show()` replaces it. Scrolls when the chain is long."""

    DEFAULT_CSS = """
    DetailPane {
        height: 60%;
        border-top: thick $accent;
        background: $surface;
        padding: 0 1;
        &:focus { border-top: thick $accent-lighten-1; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.record_id: str | None = None

    def compose(self) -> ComposeResult:
        yield Static(id="detail-body")

    def show(self, record: dict) -> None:
        self.record_id = record.get("id") if isinstance(record.get("id"), str) else None
        self._set(render_detail(record))
        self.border_title = "tunnel detail  (escape closes, tab switches focus)"

    def show_error(self, message: str) -> None:
        self.record_id = None
        self._set(Text(message, style="bold red"))

    def _set(self, renderable: RenderableType) -> None:
        self.query_one("#detail-body", Static).update(renderable)
        self.scroll_home(animate=False)
