"""The header: status, filter and counts."""

from .status import Status, StatusHeader, status_text

__all__ = ["Status", "StatusHeader", "status_text"]
