"""The Textual UI: `InspectorApp(feed, export_dir=...)` with a `ProxyFeed` or `FileFeed`.

Areas, one folder each: `table/` (the live tunnel table), `detail/` (one tunnel,
explained), `hosts/` (one row per CONNECT target), `header/`, `search/`, `eventlog/`.
`model.py` is what they all draw from; `messages.py` is how they talk.
"""

from inspector.tui.app import InspectorApp
from inspector.tui.feeds import FeedError, FileFeed, ProxyFeed

__all__ = ["FeedError", "FileFeed", "InspectorApp", "ProxyFeed"]
