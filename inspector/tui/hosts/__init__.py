"""The hosts view: one row per CONNECT host:port."""

from inspector.tui.hosts.hosts_table import HostsTable

__all__ = ["HostsTable"]
