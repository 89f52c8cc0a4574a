"""The hosts view: one row per CONNECT host:port."""

from .hosts_table import HostsTable

__all__ = ["HostsTable"]
