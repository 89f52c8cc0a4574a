"""What it means (pure): the stable finding codes, and the findings and hints a
tunnel's handshake and SNI lead to. No mitmproxy, Textual or asyncio."""
