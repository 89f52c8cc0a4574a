"""The detail pane: one tunnel, findings first."""

from .detail_pane import DetailPane
from .render import render_detail

__all__ = ["DetailPane", "render_detail"]
