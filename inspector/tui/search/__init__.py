"""The search bar."""

from inspector.tui.search.search_bar import SearchBar

__all__ = ["SearchBar"]
