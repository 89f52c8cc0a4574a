"""The live tunnel table: one line per tunnel, the newest at the bottom.

Rows are coloured by their worst finding (error red, warning yellow); a missing or
mismatched SNI is highlighted in the SNI cell itself, because that is the cell a
reader compares with the CONNECT target next to it. Following keeps the cursor on
the newest tunnel; moving up or scrolling up stops it, End resumes it.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Hashable

from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.reactive import reactive

from inspector.tui.messages import TunnelChosen, TunnelHighlighted
from inspector.tui.model import (
    ERROR,
    SNI_ABSENT,
    SNI_MISMATCH,
    SNI_NONE,
    SNI_NOT_SEEN,
    WARNING,
    TunnelModel,
)
from inspector.tui.table.virtual import Column, Part, VirtualTable

_VERDICT_STYLE = {"trusted": "good", "untrusted": "bad", "partial": "warning", "-": "muted"}
_CODE_STYLE = {ERROR: "error", WARNING: "warning"}  # each code in its own severity's colour


class TunnelTable(VirtualTable):
    COLUMNS: tuple[Column, ...] = (
        Column("time", 8, drop=3),
        Column("client", weight=1, min_width=15, max_width=21, drop=2),
        Column("stack", 10, drop=1),  # "erlang-otp" is 10
        Column("CONNECT host:port", weight=3, min_width=16, max_width=32, middle=True),
        Column("SNI", weight=4, min_width=12, max_width=28, middle=True),
        # "server alert unrecognized_name" is 30
        Column("outcome", weight=5, min_width=19, max_width=32),
        Column("verdict", 9),
        Column("findings", weight=6, min_width=10),  # the why: gets the room left
    )
    BINDINGS = [Binding("enter", "choose", "Detail")]
    COMPONENT_CLASSES = {"tunnels--sni-none", "tunnels--sni-mismatch"}
    DEFAULT_CSS = """
    TunnelTable {
        & > .tunnels--sni-none { background: $error; color: $text; text-style: bold; }
        & > .tunnels--sni-mismatch { background: $warning; color: $background; text-style: bold; }
    }
    """
    EMPTY_TEXT = "no tunnels yet"
    # Whether the cursor stays on the newest tunnel. Watched, not messaged: a watcher runs
    # as it changes, so the header says so in the same frame as the table moves (a
    # message was handled after that frame, and the next one came ~30 ms later).
    follow = reactive(True, repaint=False)

    def __init__(self, model: TunnelModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model

    def show_source(self) -> None:
        """Several record files are open: each row names its file (dropped first when the
        terminal is narrow)."""
        self.COLUMNS = (Column("source", weight=1, min_width=12, max_width=24, middle=True, drop=4),
                        *TunnelTable.COLUMNS)
        self._with_source = True

    _with_source = False

    # --- rows -------------------------------------------------------------------------

    def row_count(self) -> int:
        return len(self.model.visible)

    def row_key(self, pos: int) -> Hashable:
        return self.model.generation, self.model.visible[pos]

    def row_parts(self, pos: int) -> tuple[list[list[Part]], Style | None]:
        row = self.model.rows[self.model.visible[pos]]
        muted = self.style("muted")
        if row.sni_state == SNI_NONE:
            sni_style = self.component_style("tunnels--sni-none")
        elif row.sni_state == SNI_MISMATCH:
            sni_style = self.component_style("tunnels--sni-mismatch")
        elif row.sni_state in (SNI_NOT_SEEN, SNI_ABSENT):
            sni_style = muted
        else:
            sni_style = None
        codes: list[Part] = []
        for i, (code, rank) in enumerate(row.codes):
            if i:
                codes.append((" ", None))
            codes.append((code, self.style(_CODE_STYLE.get(rank, "muted"))))
        cells: list[list[Part]] = [
            [(row.time, muted)],
            [(row.client, muted)],
            [(row.stack, muted)],
            [(row.target, None)],
            [(row.sni, sni_style)],
            [(row.outcome, None)],
            [(row.verdict, self.style(_VERDICT_STYLE.get(row.verdict, "muted")))],
            codes,
        ]
        if self._with_source:
            cells.insert(0, [(row.source or "-", muted)])
        row_style = {ERROR: "error", WARNING: "warning"}.get(row.severity)
        return cells, self.style(row_style) if row_style else None

    # --- follow -----------------------------------------------------------------------

    def rows_added(self) -> None:
        """New rows were appended to the model: keep following, or stay put."""
        self.rows_changed()
        if self.follow and self.row_count():
            self.move_cursor(self.row_count() - 1, by_user=False)
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    def set_follow(self, follow: bool) -> None:
        self.follow = follow
        if follow and self.row_count():
            self.move_cursor(self.row_count() - 1, by_user=False)
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    def cursor_moved(self, by_user: bool) -> None:
        if by_user:
            self.follow = self.cursor >= self.row_count() - 1
        self.post_message(TunnelHighlighted(self.current_index))

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self.follow = False

    @property
    def current_index(self) -> int | None:
        """The model index of the row under the cursor."""
        visible = self.model.visible
        return visible[self.cursor] if 0 <= self.cursor < len(visible) else None

    def keep_index(self, index: int | None) -> None:
        """After the filter changed: put the cursor back on model row `index`."""
        self.rows_changed()
        if self.follow or index is None:
            self.set_follow(True)
            return
        pos = self.model.position_of(index)
        if pos is None:  # filtered out: the nearest row before it
            pos = max(0, bisect_left(self.model.visible, index) - 1)
        self.move_cursor(pos, by_user=False)

    def action_choose(self) -> None:
        index = self.current_index
        if index is not None:
            self.post_message(TunnelChosen(index))
