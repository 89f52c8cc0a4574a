"""A table that draws only the rows on screen, from a model it does not own.

Textual's DataTable measures and stores every cell (13 s and 300 MB at 100k rows,
facts/textual.md); this is a `ScrollView` with `render_line`, in the manner of
Toolong's log view: the subclass says how many rows there are and what the cells of
row N are, and rendered lines are cached until the row, the cursor, the scrollbar's
thumb or the width changes. Cells are plain text with a rich Style: nothing is ever parsed as markup.

The scrollbar is the last cell of each line, drawn here, not Textual's ScrollBar
widget: that widget is a second full-height render on every frame that moves it, and
the frames that matter most (End, or resume, while tunnels flood in) all move it. It
cost 2.5 of the 11 ms such a frame took; the column costs one segment per line.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import NamedTuple

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

GAP = 1  # space between columns (cells are padded to their width)
PAD = 1  # space before the first column
BAR = 1  # the scrollbar column, at the right edge

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


def cells_of(text: str) -> int:
    """Cells `text` takes: printable ASCII takes one per character, with no lookup."""
    return len(text) if text.isascii() and text.isprintable() else cell_len(text)


def fit_parts(parts: list[Part], width: int, right: bool = False, middle: bool = False) -> list[Part]:
    """Exactly `width` cells: parts cut with an ellipsis if too long, padded if short."""
    if middle and len(parts) == 1:
        text, style = parts[0]
        parts = [(cut_middle(text, width), style)]
    out: list[Part] = []
    used = 0
    for text, style in parts:
        n = cells_of(text)
        if used + n > width:
            room = width - used
            if room > 1:
                out.append((set_cell_size(text, room - 1) + "…", style))
            elif room == 1:
                out.append(("…", style))
            return out
        out.append((text, style))
        used += n
    if used < width:
        pad = (" " * (width - used), None)
        if right:
            out.insert(0, pad)
        else:
            out.append(pad)
    return out


def fit(parts: list[Part], width: int, right: bool = False, middle: bool = False) -> list[Segment]:
    """`fit_parts`, as segments."""
    return [Segment(text, style) for text, style in fit_parts(parts, width, right, middle)]


class LineKey(NamedTuple):
    """What a line shows: equal keys, equal lines."""

    kind: str  # "header", "row", "empty" (the table's empty text) or "blank"
    what: Hashable  # the row's key (row_key), or the empty text
    state: int  # the cursor on this row: 0 not, 1 focused, 2 not focused
    thumb: bool  # the scrollbar's thumb is on this line
    width: int


class _Geometry(NamedTuple):
    top: int  # the row on the first body line
    rows: int
    width: int
    thumb: range  # the body lines (0 = the first row's) the scrollbar's thumb covers
    state: int  # the cursor row's look: 1 focused, 2 not
    style: Style  # the widget's own (Textual works it out from every ancestor)


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
        "vtable--scrollbar",
        "vtable--scrollbar-thumb",
    }
    DEFAULT_CSS = """
    VirtualTable {
        overflow-x: hidden;
        overflow-y: hidden;
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
        & > .vtable--scrollbar { background: $scrollbar-background; }
        & > .vtable--scrollbar-thumb { background: $scrollbar; }
    }
    """

    EMPTY_TEXT = "nothing to show"

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.cursor = 0
        self._lines: LRUCache[LineKey, Strip] = LRUCache(256)
        self._styles: dict[str, Style] = {}
        self._widths: tuple[int, list[int]] = (-1, [])
        # What each line of the widget shows (its cache key), as last drawn: after the
        # model changed, only the lines whose key differs are drawn again.
        self._drawn: dict[int, LineKey] = {}
        self._frame: _Geometry | None = None  # while a frame is drawn
        self.empty_text = self.EMPTY_TEXT
        self._dragging = False  # the scrollbar is held with the mouse

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

    def set_empty_text(self, text: str) -> None:
        """What the table says while it has no row to show."""
        if text != self.empty_text:
            self.empty_text = text
            self.rows_changed()

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

    @property
    def allow_vertical_scroll(self) -> bool:
        # Textual allows the mouse wheel only with its own scrollbar shown.
        return self.max_scroll_y > 0

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles.clear()
        self._lines.clear()
        self._drawn.clear()

    def on_resize(self, event: events.Resize) -> None:
        self.rows_changed()
        self.call_after_refresh(self.scroll_to_cursor)  # e.g. the detail pane opened below

    def on_focus(self, event: events.Focus) -> None:
        self.refresh()

    def on_blur(self, event: events.Blur) -> None:
        self.refresh()

    # --- rows changed -----------------------------------------------------------------

    def rows_changed(self, *, reset_cache: bool = False) -> None:
        """The model changed: resize the virtual area, keep the cursor in range, and
        redraw the lines that now show something else.

        Rows appended below the view change no line but the scrollbar's few: redrawing
        the whole table for them cost ~2.5 ms and 18 KB to the terminal per batch.
        """
        if reset_cache:
            self._lines.clear()
            self._drawn.clear()
        region = self.scrollable_content_region
        count = self.row_count()
        # Set quietly: as a reactive it would repaint the whole widget, and a layout
        # pass has nothing to move (the table draws its own scrollbar).
        self.set_reactive(ScrollView.virtual_size, Size(region.width, count + 1))
        if self.scroll_y > self.max_scroll_y:
            self.scroll_to(y=self.max_scroll_y, animate=False, force=True)
        if self.cursor >= count:
            self.cursor = max(0, count - 1)
        geometry = self._geometry()
        stale = [y for y in range(region.height) if self._drawn.get(y) != self._line_key(y, geometry)]
        if len(stale) > region.height // 2:  # one region for all: fewer for Textual to merge
            self.refresh()
        else:
            for y in stale:
                self.refresh_line(geometry.top + y)

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
        if offset is None or offset.y == 0 or self._on_scrollbar(offset.x):
            return
        pos = round(self.scroll_y) + offset.y - 1
        if pos < self.row_count():
            self.move_cursor(pos)

    # The scrollbar: pressed or dragged, the cursor goes to the same place in the rows
    # (its top line: the first row, its bottom line: the last). With no rows out of
    # view there is no thumb, and its column is the last cell of each row.

    def _on_scrollbar(self, x: int) -> bool:
        g = self._geometry()
        return x >= g.width - BAR and bool(g.thumb)

    def _to_scrollbar_place(self, y: int) -> None:
        share = min(1.0, max(0.0, (y - 1) / max(1, self.body_height - 1)))
        self.move_cursor(round(share * (self.row_count() - 1)))

    def on_mouse_down(self, event: events.MouseDown) -> None:
        offset = event.get_content_offset(self)
        if offset is not None and offset.y > 0 and self._on_scrollbar(offset.x):
            self._dragging = True
            self.capture_mouse()
            self._to_scrollbar_place(offset.y)

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self._dragging:
            self._to_scrollbar_place(event.get_content_offset_capture(self).y)

    def on_mouse_up(self, event: events.MouseUp) -> None:
        if self._dragging:
            self._dragging = False
            self.release_mouse()

    # --- drawing ----------------------------------------------------------------------

    def _column_widths(self, width: int) -> list[int]:
        if self._widths[0] != width:
            self._widths = (width, layout(self.COLUMNS, width))
        return self._widths[1]

    def _geometry(self) -> _Geometry:
        region = self.scrollable_content_region
        top, count, height = round(self.scroll_y), self.row_count(), max(1, region.height - 1)
        thumb = range(0)
        if count > height:
            size = max(1, round(height * height / count))
            start = round((height - size) * min(1.0, top / (count - height)))
            thumb = range(start, start + size)
        state = 1 if self.has_focus else 2
        return _Geometry(top, count, region.width, thumb, state, self.rich_style)

    def _line_key(self, y: int, g: _Geometry) -> LineKey:
        if y == 0:
            return LineKey("header", None, 0, False, g.width)
        thumb = y - 1 in g.thumb
        pos = g.top + y - 1
        if pos >= g.rows:
            if g.rows == 0 and y == 1:
                return LineKey("empty", self.empty_text, 0, thumb, g.width)
            return LineKey("blank", None, 0, thumb, g.width)
        state = g.state if pos == self.cursor else 0
        return LineKey("row", self.row_key(pos), state, thumb, g.width)

    def render_lines(self, crop: Region) -> list[Strip]:
        # The geometry once per frame, not per line: each region lookup walks styles.
        self._frame = self._geometry()
        try:
            return super().render_lines(crop)
        finally:
            self._frame = None

    def render_line(self, y: int) -> Strip:
        g = self._frame or self._geometry()
        key = self._line_key(y, g)
        self._drawn[y] = key
        strip = self._lines.get(key)
        if strip is None:
            strip = self._lines[key] = self._draw(key, g.top + y - 1, g.width, g.style)
        return strip

    def _draw(self, key: LineKey, pos: int, width: int, base: Style) -> Strip:
        inner = width - BAR
        widths = self._column_widths(inner)
        if key.kind == "header":
            style = base + self.style("header")
            return Strip([*self._header(widths, inner, style), Segment(" " * BAR, style)], width)
        bar = Segment(" " * BAR, base + self.style("scrollbar-thumb" if key.thumb else "scrollbar"))
        if key.kind == "row":
            return self._row(pos, key.state, widths, inner, bar, base)
        text = [(str(key.what), base + self.style("empty"))] if key.kind == "empty" else []
        line = fit([(" " * PAD, base), *text], inner)
        return Strip([*Segment.apply_style(line, base), bar], width)

    def _header(self, widths: list[int], width: int, style: Style) -> list[Segment]:
        segments = [Segment(" " * PAD, style)]
        shown = [(c, w) for c, w in zip(self.COLUMNS, widths) if w]
        for i, (column, w) in enumerate(shown):
            if i:
                segments.append(Segment(" " * GAP, style))
            segments += fit([(column.title, style)], w, column.right)
        return Segment.adjust_line_length(segments, width, style)

    def _row(self, pos: int, state: int, widths: list[int], width: int, bar: Segment,
             base: Style) -> Strip:
        cells, row_style = self.row_parts(pos)
        # Layered once per row, not per segment in three passes: the widget's style,
        # then the cursor's, then the row's colour; a cell's own style overrides them.
        if state:
            base += self.style("cursor" if state == 1 else "cursor-blurred")
        if row_style is not None:
            base += row_style
        pieces: list[Part] = [(" " * PAD, None)]
        used = PAD
        for column, parts, w in zip(self.COLUMNS, cells, widths):
            if w:
                if used > PAD:
                    pieces.append((" " * GAP, None))
                    used += GAP
                pieces += fit_parts(parts, w, column.right, column.middle)
                used += w
        if used < width:
            pieces.append((" " * (width - used), None))
        # Neighbours with the same style become one segment: every later stage of a
        # repaint (Textual's line cache, filters, the compositor) costs per segment.
        merged: list[Segment] = []
        texts: list[str] = []
        current = base
        for text, style in pieces:
            combined = base + style if style is not None else base
            if combined is not current and combined != current:
                if texts:
                    merged.append(Segment("".join(texts), current))
                texts, current = [], combined
            texts.append(text)
        if texts:
            merged.append(Segment("".join(texts), current))
        if used > width:  # a terminal too narrow even for the columns that stay
            merged = Segment.adjust_line_length(merged, width, base)
        return Strip([*merged, bar], width + BAR)
