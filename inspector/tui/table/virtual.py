"""A table that draws only the rows on screen, from a model it does not own.

Textual's DataTable measures and stores every cell (13 s and 300 MB at 100k rows,
facts/textual.md); this is a `ScrollView` with `render_line`, in the manner of
Toolong's log view: the subclass says how many rows there are and what the cells of
row N are, and rendered lines are cached until the row, the cursor or the width
changes. Cells are plain text with a rich Style: nothing is ever parsed as markup.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

GAP = 1  # space between columns (cells are padded to their width)
PAD = 1  # space before the first column

# A cell: one (text, style) part, or several (the codes column colours each code).
Part = tuple[str, Style | None]


@dataclass(frozen=True)
class Column:
    title: str
    width: int = 0  # fixed width; 0 = flexible, from min_width up to max_width by weight
    weight: int = 1
    min_width: int = 6
    max_width: int = 0  # 0: no limit
    right: bool = False
    middle: bool = False  # cut long text in the middle (host names: both ends matter)
    drop: int = 0  # in a narrow terminal, columns with drop 1 go first, then 2...; 0 stays


def _needed(columns: tuple[Column, ...], shown: list[int]) -> int:
    return sum(columns[i].width or columns[i].min_width for i in shown) + GAP * (len(shown) - 1) + PAD


def layout(columns: tuple[Column, ...], total: int) -> list[int]:
    """Column widths for a total width; 0 for a column left out.

    When the minimums do not fit, the droppable columns are left out in their order,
    so that the columns that say what is wrong stay on screen in an 80-column terminal.
    Every flexible column shown gets its minimum; the rest is shared by weight, a
    column stopping at its maximum and leaving its share to the others.
    """
    shown = list(range(len(columns)))
    for i in sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: columns[i].drop):
        if _needed(columns, shown) <= total:
            break
        shown.remove(i)
    widths = [(c.width or c.min_width) if i in shown else 0 for i, c in enumerate(columns)]
    free = total - _needed(columns, shown)
    open_ = [i for i in shown if not columns[i].width]
    while free > 0 and open_:
        weights = sum(columns[i].weight for i in open_)
        given = 0
        for i in open_:
            share = max(1, free * columns[i].weight // weights)
            cap = columns[i].max_width
            if cap:
                share = min(share, cap - widths[i])
            share = min(share, free - given)
            widths[i] += share
            given += share
        free -= given
        open_ = [i for i in open_ if not columns[i].max_width or widths[i] < columns[i].max_width]
        if given == 0:
            break
    return widths


def cut_middle(text: str, width: int) -> str:
    """`text` in at most `width` cells, its middle replaced by an ellipsis."""
    if cell_len(text) <= width:
        return text
    if width < 5:
        return set_cell_size(text, width)
    tail = (width - 1) // 2
    end = text[-tail:]
    if not end.isascii():  # wide characters: one cell is not one character
        return set_cell_size(text, width - 1) + "…"
    return set_cell_size(text, width - 1 - tail) + "…" + end


def fit(parts: list[Part], width: int, right: bool = False, middle: bool = False) -> list[Segment]:
    """Exactly `width` cells: parts cut with an ellipsis if too long, padded if short."""
    if middle and len(parts) == 1:
        text, style = parts[0]
        parts = [(cut_middle(text, width), style)]
    out: list[Segment] = []
    used = 0
    for text, style in parts:
        n = cell_len(text)
        if used + n > width:
            room = width - used
            if room > 1:
                out.append(Segment(set_cell_size(text, room - 1) + "…", style))
            elif room == 1:
                out.append(Segment("…", style))
            return out
        out.append(Segment(text, style))
        used += n
    if used < width:
        pad = Segment(" " * (width - used))
        if right:
            out.insert(0, pad)
        else:
            out.append(pad)
    return out


class VirtualTable(ScrollView, can_focus=True):
    """Subclasses implement `row_count`, `row_key` and `row_parts`."""

    COLUMNS: tuple[Column, ...] = ()
    BINDINGS = [
        Binding("up,k", "cursor(-1)", "Up", show=False),
        Binding("down,j", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home,g", "first", "First", show=False),
        Binding("end,G", "last", "Last", show=False),
    ]
    COMPONENT_CLASSES = {
        "vtable--header",
        "vtable--cursor",
        "vtable--cursor-blurred",
        "vtable--error",
        "vtable--warning",
        "vtable--muted",
        "vtable--good",
        "vtable--bad",
        "vtable--alarm",
        "vtable--empty",
    }
    DEFAULT_CSS = """
    VirtualTable {
        overflow-x: hidden;
        overflow-y: scroll;
        background: $surface;
        & > .vtable--header { background: $panel; color: $text; text-style: bold; }
        & > .vtable--cursor { background: $block-cursor-background; text-style: bold; }
        & > .vtable--cursor-blurred { background: $block-cursor-blurred-background; }
        & > .vtable--error { color: $text-error; }
        & > .vtable--warning { color: $text-warning; }
        & > .vtable--muted { color: $text-muted; }
        & > .vtable--good { color: $text-success; }
        & > .vtable--bad { color: $text-error; text-style: bold; }
        & > .vtable--alarm { background: $error; color: $text; text-style: bold; }
        & > .vtable--empty { color: $text-muted; text-style: italic; }
    }
    """

    EMPTY_TEXT = "nothing to show"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.cursor = 0
        self._lines: LRUCache[Hashable, Strip] = LRUCache(256)
        self._styles: dict[str, Style] = {}
        self._widths: tuple[int, list[int]] = (-1, [])

    # --- what subclasses provide ------------------------------------------------------

    def row_count(self) -> int:
        raise NotImplementedError

    def row_key(self, pos: int) -> Hashable:
        """Changes whenever what row `pos` shows changes."""
        raise NotImplementedError

    def row_parts(self, pos: int) -> tuple[list[list[Part]], Style | None]:
        """The parts of each cell of row `pos`, and the style of the row."""
        raise NotImplementedError

    def cursor_moved(self, by_user: bool) -> None:
        """Called after the cursor moved."""

    # --- styles -----------------------------------------------------------------------

    def style(self, name: str) -> Style:
        """The `vtable--<name>` component style."""
        return self.component_style(f"vtable--{name}")

    def component_style(self, component: str) -> Style:
        """What the CSS sets for a component, cached per theme.

        The partial style says which attributes the CSS sets; their values come from
        the full style, where translucent colours are blended ($text-muted is 60%
        white, not white).
        """
        style = self._styles.get(component)
        if style is None:
            partial = self.get_component_rich_style(component, partial=True)
            full = self.get_component_rich_style(component)
            style = self._styles[component] = partial + Style(
                color=full.color if partial.color else None,
                bgcolor=full.bgcolor if partial.bgcolor else None,
            )
        return style

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._lines.clear()

    def on_resize(self, event: events.Resize) -> None:
        self.rows_changed()
        self.call_after_refresh(self.scroll_to_cursor)  # e.g. the detail pane opened below

    def on_focus(self, event: events.Focus) -> None:
        self.refresh()

    def on_blur(self, event: events.Blur) -> None:
        self.refresh()

    # --- rows changed -----------------------------------------------------------------

    def rows_changed(self, *, reset_cache: bool = False) -> None:
        """The model changed: resize the virtual area, keep the cursor in range, redraw."""
        if reset_cache:
            self._lines.clear()
        count = self.row_count()
        self.virtual_size = Size(self.scrollable_content_region.width, count + 1)
        if self.cursor >= count:
            self.cursor = max(0, count - 1)
        self.refresh()

    @property
    def body_height(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def move_cursor(self, pos: int, *, by_user: bool = True) -> None:
        count = self.row_count()
        pos = max(0, min(pos, count - 1)) if count else 0
        old, top = self.cursor, round(self.scroll_y)
        self.cursor = pos
        self.scroll_to_cursor()
        if pos != old:
            if round(self.scroll_y) == top:
                # Only the two cursor rows changed: a keypress redraws 2 lines, not the
                # table (line 0 is the header, so row `pos` is virtual line pos + 1).
                self.refresh_line(old + 1)
                self.refresh_line(pos + 1)
            else:
                self.refresh()
        self.cursor_moved(by_user)

    def scroll_to_cursor(self) -> None:
        top = round(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, force=True)
        elif self.cursor >= top + self.body_height:
            self.scroll_to(y=self.cursor - self.body_height + 1, animate=False, force=True)

    # --- actions ----------------------------------------------------------------------

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self.cursor + direction * self.body_height)

    def action_first(self) -> None:
        self.move_cursor(0)

    def action_last(self) -> None:
        self.move_cursor(self.row_count() - 1)

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        pos = round(self.scroll_y) + offset.y - 1
        if pos < self.row_count():
            self.move_cursor(pos)

    # --- drawing ----------------------------------------------------------------------

    def _column_widths(self, width: int) -> list[int]:
        if self._widths[0] != width:
            self._widths = (width, layout(self.COLUMNS, width))
        return self._widths[1]

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        widths = self._column_widths(width)
        if y == 0:
            return self._header(widths, width)
        pos = round(self.scroll_y) + y - 1
        count = self.row_count()
        if pos >= count:
            if count == 0 and y == 1:
                empty = fit([(self.EMPTY_TEXT, self.style("empty"))], width - PAD)
                return Strip([Segment(" " * PAD), *empty]).apply_style(self.rich_style)
            return Strip.blank(width, self.rich_style)
        state = 0 if pos != self.cursor else (1 if self.has_focus else 2)
        key = (self.row_key(pos), state, width)
        strip = self._lines.get(key)
        if strip is None:
            strip = self._lines[key] = self._row(pos, state, widths, width)
        return strip

    def _header(self, widths: list[int], width: int) -> Strip:
        style = self.style("header")
        segments = [Segment(" " * PAD, style)]
        shown = [(c, w) for c, w in zip(self.COLUMNS, widths) if w]
        for i, (column, w) in enumerate(shown):
            if i:
                segments.append(Segment(" " * GAP, style))
            segments += fit([(column.title, style)], w, column.right)
        return Strip(segments).adjust_cell_length(width, style).apply_style(self.rich_style + style)

    def _row(self, pos: int, state: int, widths: list[int], width: int) -> Strip:
        cells, row_style = self.row_parts(pos)
        # Layered once per row, not per segment in three passes: the widget's style,
        # then the cursor's, then the row's colour; a cell's own style overrides them.
        base = self.rich_style
        if state:
            base += self.style("cursor" if state == 1 else "cursor-blurred")
        if row_style is not None:
            base += row_style
        segments = [Segment(" " * PAD)]
        shown = [(c, p, w) for c, p, w in zip(self.COLUMNS, cells, widths) if w]
        for i, (column, parts, w) in enumerate(shown):
            if i:
                segments.append(Segment(" " * GAP))
            segments += fit(parts, w, column.right, column.middle)
        # Neighbours with the same style become one segment: every later stage of a
        # repaint (Textual's line cache, filters, the compositor) costs per segment.
        merged: list[Segment] = []
        text, style = "", base
        for segment in segments:
            s = base + segment.style if segment.style else base
            if s == style:
                text += segment.text
                continue
            if text:
                merged.append(Segment(text, style))
            text, style = segment.text, s
        if text:
            merged.append(Segment(text, style))
        return Strip(merged).adjust_cell_length(width, base)
