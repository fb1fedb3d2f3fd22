"""A bare HTTP/1.1 GET client on keep-alive connections, for load tests.

aiohttp's client costs the test process more CPU per call than the proxies
under test spend; at hundreds of calls per second on a shared 2-core machine
the load generator itself then falls behind its schedule. This one writes a
prepared request and reads the status, the headers and a Content-Length or
chunked body, nothing else.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class RawClient:
    base: str  # http://host:port
    idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(default_factory=deque)

    async def get(self, path: str) -> Reply:
        reader, writer = self.idle.pop() if self.idle else await self._connect()
        host = urlsplit(self.base).netloc
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        try:
            reply = await _read(reader)
        except BaseException:
            writer.close()
            raise
        if reply.headers.get("connection", "").lower() == "close":
            writer.close()
        else:
            self.idle.append((reader, writer))
        return reply

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        parts = urlsplit(self.base)
        return await asyncio.open_connection(parts.hostname, parts.port)

    def close(self) -> None:
        while self.idle:
            self.idle.pop()[1].close()


async def _read(reader: asyncio.StreamReader) -> Reply:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            body += (await reader.readexactly(size + 2))[:-2]
            if size == 0:
                break
        return Reply(status, headers, bytes(body))
    return Reply(status, headers, await reader.readexactly(int(headers.get("content-length", "0"))))
