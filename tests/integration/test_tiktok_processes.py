"""TikTok Shop across real `authproxy serve` processes on one Redis.

The sandbox rotates refresh tokens (single use), the strict reading of an
unverified fact: a second refresh with the same token would show up as a
reused refresh token and lock the shop out.
"""

from __future__ import annotations

import asyncio
import hashlib

import aiohttp

from authproxy.sandbox.tiktok import TikTokSandbox
from tests.integration.test_tiktok import APP_KEY, APP_SECRET, CIPHER
from tests.procs import proxy_processes

ORDERS = "/tt/shop1/order/202309/orders/search?page_size=20"
BODY = b'{ "order_status" : "UNPAID" ,\n  "ids": [1, 2] }'


async def _fire(urls: list[str], count: int) -> list[tuple[int, str | None, str]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int) -> tuple[int, str | None, str]:
            headers = {"Content-Type": "application/json"}
            async with session.post(urls[i % len(urls)] + ORDERS, data=BODY, headers=headers) as reply:
                echo = await reply.json(content_type=None)
                return (
                    reply.status,
                    reply.headers.get("X-AuthProxy-Retried"),
                    echo.get("body_sha256", str(echo)),
                )

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_105002_on_every_cycle_refreshes_once_across_processes(serve, shared_redis, tmp_path):
    sandbox = TikTokSandbox(APP_KEY, APP_SECRET, shop_ciphers=(CIPHER,))
    upstream = await serve(sandbox.app())
    base = str(upstream.make_url("")).rstrip("/")
    apps = {
        "tt": {
            "platform": "tiktok",
            "base_url": base,
            "auth_url": base,
            "app_key": APP_KEY,
            "app_secret": APP_SECRET,
            "shops": {"shop1": {"shop_cipher": CIPHER, "refresh_token": sandbox.seed_refresh_token()}},
        }
    }
    digest = hashlib.sha256(BODY).hexdigest()
    async with proxy_processes(apps, shared_redis, tmp_path, count=2) as procs:
        urls = [p.url for p in procs]
        for _ in range(10):
            results = await _fire(urls, 30)
            assert {(status, sha) for status, _, sha in results} == {(200, digest)}, results[:3]
            sandbox.book.expire_all()  # TikTok revokes: the next calls see 105002
        results = await _fire(urls, 30)
    assert {(status, sha) for status, _, sha in results} == {(200, digest)}
    assert any(retried == "1" for _, retried, _ in results)
    assert sandbox.stats.reused_refresh_tokens == 0
    assert sandbox.stats.token_calls == 11  # the first token, then one per revocation
