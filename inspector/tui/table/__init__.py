"""The tunnel table and the virtual table it is built on."""

from .tunnel_table import TunnelTable
from .virtual import Column, VirtualTable

__all__ = ["Column", "TunnelTable", "VirtualTable"]
