"""Reading a client's request body: as sent, capped, within a time budget, faults named.

The body is never decoded (the server runs with auto_decompress off: see
http_server.py): a gzip body is the client's gzip bytes. One that fits
`max_replay_body` is buffered (it can be signed and replayed); a larger one
is streamed upstream as it arrives, up to `max_body`.

The time budget (`body_timeout`) counts only the time spent waiting for the
client. A streamed body is read only as fast as the upstream takes it, and
that time is not the client's; a body dribbled a byte at a time is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import StreamReader, web

from authproxy.errors import BadRequest, BodyTooLarge, ClientGone, ProxyError, RequestTimeout
from authproxy.settings import ServerSettings


class BodyClock:
    """Reads pieces of one request body while `left` seconds of waiting remain."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.left = seconds

    async def read(self, source: StreamReader) -> bytes:
        """The next piece of the body, b"" at its end."""
        if source.is_eof():  # the rest has arrived (a small body comes with its head): no wait
            return await _piece(source)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(max(self.left, 0.0)):
                return await _piece(source)
        except TimeoutError:
            raise RequestTimeout(
                f"the request body did not arrive within {self.seconds:g} s (server.body_timeout)"
            ) from None
        finally:
            self.left -= loop.time() - started


async def _piece(source: StreamReader) -> bytes:
    try:
        return await source.readany()
    except web.RequestPayloadError:  # the parser's message quotes request bytes: not repeated
        raise BadRequest("the request body is malformed (chunked encoding or length)") from None
    except ConnectionError:
        raise ClientGone("the client closed the connection while sending its body") from None


@dataclass
class StreamedBody:
    """A request body too large to buffer: forwarded as it arrives, capped at `limit`."""

    prefix: bytes
    source: StreamReader
    limit: int
    length: int | None  # the client's Content-Length, forwarded as is
    clock: BodyClock
    sent: int = 0
    failure: ProxyError | None = field(default=None)  # why the upload stopped, if it did

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._counted(self.prefix)
        while chunk := await self._next():
            yield self._counted(chunk)

    async def _next(self) -> bytes:
        try:
            return await self.clock.read(self.source)
        except ProxyError as exc:
            self.failure = exc
            raise

    def _counted(self, chunk: bytes) -> bytes:
        self.sent += len(chunk)
        if self.sent > self.limit:
            self.failure = BodyTooLarge(f"the request body exceeds {self.limit} bytes (server.max_body)")
            raise self.failure
        return chunk


async def read_body(request: web.BaseRequest, server: ServerSettings) -> bytes | StreamedBody:
    """The body buffered when it fits `max_replay_body`, else streamed (capped)."""
    limit, cap = server.max_replay_body, server.max_body
    length = request.content_length
    if length is not None and length > cap:
        raise BodyTooLarge(f"the request body ({length} bytes) exceeds {cap} bytes (server.max_body)")
    if not request.body_exists:
        return b""
    clock = BodyClock(server.body_timeout)
    buffered = bytearray()
    while len(buffered) <= limit:
        chunk = await clock.read(request.content)
        if not chunk:
            return bytes(buffered)
        buffered += chunk
    if len(buffered) > cap:
        raise BodyTooLarge(f"the request body exceeds {cap} bytes (server.max_body)")
    return StreamedBody(bytes(buffered), request.content, cap, length, clock)
