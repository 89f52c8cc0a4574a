"""A small asyncio TLS server for the benchmarks: answers one HTTP request and closes.

    python bench/upstream.py CERT KEY        -> prints its port, serves until killed
    python bench/upstream.py CERT KEY echo   -> the same, but echoes until the client ends

Run in its own process so the server's work does not share the benchmark client's GIL.
"""

from __future__ import annotations

import asyncio
import ssl
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        writer.write(RESPONSE)
        await writer.drain()
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echoes with no timeout: the idle-tunnel benchmark holds its tunnels open."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def main(cert: str, key: str, mode: str) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server = await asyncio.start_server(echo if mode == "echo" else handle, "127.0.0.1", 0,
                                        ssl=ctx, backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "http"))
