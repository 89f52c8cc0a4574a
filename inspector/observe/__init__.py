"""Bytes -> what happened (pure): TLS records, the handshake's outcome, the SNI against
the CONNECT target, what a client sent the proxy. No mitmproxy, Textual or asyncio."""
