"""The one helper every untrusted string passes before it reaches a screen.

SNI, host names and certificate fields come from strangers. `safe()` makes them inert
text: every character that is not printable (ESC, other C0/C1 controls, bidi
overrides, zero-width marks) becomes a visible escape such as `\\x1b` or `\\u202e`.
It does not deal with markup: the UI renders the result as plain `Text`, never markup.
"""

from __future__ import annotations

import unicodedata

_MAX = 512


def _visible(ch: str) -> str:
    cp = ord(ch)
    if ch.isprintable() and unicodedata.category(ch) not in ("Cf", "Zl", "Zp"):
        return ch
    if cp <= 0xFF:
        return f"\\x{cp:02x}"
    return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"


def safe(value: object, limit: int = _MAX) -> str:
    """Printable, single-line, bounded text for an untrusted value."""
    if value is None:
        return ""
    text = str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    if text.isascii() and text.isprintable():
        return text  # the common case: nothing to do
    return "".join(_visible(ch) for ch in text)
