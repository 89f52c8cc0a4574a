"""Everything that touches mitmproxy lives in this package."""
