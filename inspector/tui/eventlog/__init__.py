"""Log records, routed away from the terminal and into a panel and a file."""

from inspector.tui.eventlog.panel import EventLog
from inspector.tui.eventlog.router import LogRouter, default_log_path

__all__ = ["EventLog", "LogRouter", "default_log_path"]
