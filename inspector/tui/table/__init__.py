"""The tunnel table and the virtual table it is built on."""

from inspector.tui.table.tunnel_table import TunnelTable
from inspector.tui.table.virtual import Column, VirtualTable

__all__ = ["Column", "TunnelTable", "VirtualTable"]
