"""Amazon across separate `authproxy serve` processes on one Redis.

Amazon tells a token is dead only with a 403 (the proxy's clock still says it
is valid): every process sees the 403s at once, and still only one LWA
refresh may happen per expiry (replay rule: refresh only if the sent token is
the stored one).
"""

from __future__ import annotations

import asyncio

import aiohttp

from authproxy.sandbox.amazon import SCOPES, AmazonSandbox
from tests.procs import proxy_processes

CLIENT_ID = "amzn1.application-oa2-client.procs"
CLIENT_SECRET = "procs-lwa-secret"


async def _fire(urls: list[str], path: str, count: int) -> list[tuple[int, str]]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int) -> tuple[int, str]:
            async with session.get(urls[i % len(urls)] + path) as reply:
                await reply.read()
                return reply.status, reply.headers.get("X-AuthProxy-Retried", "0")

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_403_expiry_seen_by_two_processes_refreshes_once(serve, shared_redis, tmp_path):
    sandbox = AmazonSandbox(CLIENT_ID, CLIENT_SECRET)
    sandbox.knobs.limits = False  # about refreshes: Amazon's quotas are lifted on both sides
    upstream = await serve(sandbox.app())
    base = str(upstream.make_url("")).rstrip("/")
    seed = sandbox.seed_refresh_token()
    apps = {
        "amz": {
            "platform": "amazon",
            "base_url": base,
            "auth_url": base,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "shops": {"seller1": {"refresh_token": seed}},
            "limits": [{"match": "*", "rate": 10000.0}],
        }
    }
    async with proxy_processes(apps, shared_redis, tmp_path, count=2) as procs:
        urls = [p.url for p in procs]
        path = "/amz/seller1/orders/v0/orders?MarketplaceIds=ATVPDKIKX0DER"
        cold = await _fire(urls, path, 100)
        assert [status for status, _ in cold] == [200] * 100
        assert sandbox.stats.token_calls == 1
        for cycle in range(2, 7):
            sandbox.book.expire_all()
            replies = await _fire(urls, path, 100)
            assert [status for status, _ in replies] == [200] * 100
            assert (200, "1") in replies  # some were replayed after a 403
            assert sandbox.stats.token_calls == cycle  # one LWA refresh per expiry
        grantless = await _fire(urls, "/amz/grantless:notifications/notifications/v1/destinations", 40)
    assert [status for status, _ in grantless] == [200] * 40
    assert sandbox.stats.token_calls == 7
    assert sandbox.token_requests[-1]["scope"] == SCOPES[0]
    assert {form["refresh_token"] for form in sandbox.token_requests[:-1]} == {seed}
