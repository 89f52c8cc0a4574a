"""Everything that imports mitmproxy lives in this package: the addon (addon.py), the
tunnel relay (relay.py, the one module that relies on mitmproxy internals) and the
embedding of mitmproxy in our own event loop (embed.py)."""
