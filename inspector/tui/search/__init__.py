"""The search bar."""

from .search_bar import SearchBar

__all__ = ["SearchBar"]
