"""The app's own messages: the only way the UI's areas talk to each other."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class TunnelHighlighted(Message):
    """The tunnel table's cursor is on row `index` of the model (None: no rows)."""

    index: int | None


@dataclass
class TunnelChosen(Message):
    """Enter on a tunnel: show its detail."""

    index: int


@dataclass
class HostChosen(Message):
    """Enter on a host in the hosts view: show that host's tunnels."""

    target: str


@dataclass
class SearchChanged(Message):
    """The search text changed (debounced); `done` when the user pressed enter."""

    text: str
    done: bool = False
