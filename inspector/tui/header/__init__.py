"""The header: status, filter and counts."""

from inspector.tui.header.status import Status, StatusHeader, status_text

__all__ = ["Status", "StatusHeader", "status_text"]
