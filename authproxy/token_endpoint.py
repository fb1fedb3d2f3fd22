"""The two I/O steps every token grant shares: calling the token endpoint, and
writing the result so that a short store outage does not lose it.

Used by the refresh protocol (tokens.py) and the code exchange (authorize.py).
"""

from __future__ import annotations

import asyncio

import aiohttp

from authproxy.errors import RefreshError, StoreUnavailable
from authproxy.models import HttpReply, HttpRequest, TokenKey, TokenRecord
from authproxy.store import TokenStore

TOKEN_REPLY_LIMIT = 1024 * 1024
SAVE_ATTEMPTS = 5


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
            body = await response.content.read(TOKEN_REPLY_LIMIT)
            return HttpReply(response.status, dict(response.headers), body)
    except TimeoutError:
        raise RefreshError("token endpoint timed out") from None
    except aiohttp.ClientError as exc:
        raise RefreshError(f"token endpoint unreachable ({type(exc).__name__})") from None


async def put_persistently(
    store: TokenStore, key: TokenKey, record: TokenRecord, expected: int
) -> int | None:
    """Compare-and-set, riding out a short store outage: a new token (a rotated
    refresh token, a spent authorization code's result) exists nowhere else."""
    delay = 0.05
    for _ in range(SAVE_ATTEMPTS - 1):
        try:
            return await store.put(key, record, expected_version=expected)
        except StoreUnavailable:
            await asyncio.sleep(delay)
            delay *= 2
    return await store.put(key, record, expected_version=expected)
