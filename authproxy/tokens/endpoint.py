"""The I/O step every token grant shares: calling the token endpoint.

Used by the refresh protocol and the code exchange (provider.py).
"""

from __future__ import annotations

import aiohttp

from authproxy.errors import RefreshError
from authproxy.models import HttpReply, HttpRequest

TOKEN_REPLY_LIMIT = 1024 * 1024


async def call_token_endpoint(
    session: aiohttp.ClientSession, request: HttpRequest, timeout: float
) -> HttpReply:
    """One call; failures become RefreshError, named without the URL (its query may hold secrets)."""
    try:
        async with session.request(
            request.method,
            request.url,
            headers=dict(request.headers),
            data=request.body,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            return HttpReply.received(response.status, response.headers, await _read(response))
    except TimeoutError:
        raise RefreshError("token endpoint timed out") from None
    except aiohttp.ClientError as exc:
        raise RefreshError(f"token endpoint unreachable ({type(exc).__name__})") from None


async def _read(response: aiohttp.ClientResponse) -> bytes:
    """The whole answer, up to TOKEN_REPLY_LIMIT bytes (one read may return less)."""
    body = bytearray()
    while len(body) < TOKEN_REPLY_LIMIT:
        chunk = await response.content.read(TOKEN_REPLY_LIMIT - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)
