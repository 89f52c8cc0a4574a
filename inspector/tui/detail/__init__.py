"""The detail pane: one tunnel, findings first."""

from inspector.tui.detail.detail_pane import DetailPane
from inspector.tui.detail.render import render_detail

__all__ = ["DetailPane", "render_detail"]
