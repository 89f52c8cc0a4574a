"""The search bar: a case-insensitive substring over host, SNI, codes and subjects.

Typing updates the filter after a short pause (one model pass per pause, not per
keystroke); enter returns to the table keeping the search; escape clears it.
"""

from __future__ import annotations

from textual import on
from textual.timer import Timer
from textual.widgets import Input

from inspector.tui.messages import SearchChanged

DEBOUNCE = 0.12


class SearchBar(Input):
    DEFAULT_CSS = """
    SearchBar {
        display: none;
        height: 3;
        &.-active { display: block; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            placeholder="search host, SNI, finding code, certificate subject (enter keeps, escape clears)",
            id=id)
        self._timer: Timer | None = None

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE, self._emit)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self._timer is not None:
            self._timer.stop()
        self.post_message(SearchChanged(self.value, done=True))

    def _emit(self) -> None:
        self.post_message(SearchChanged(self.value))
