"""Several `authproxy serve` processes on one Redis: one token call per expiry."""

from __future__ import annotations

import asyncio

import aiohttp

from authproxy.models import Token, TokenKey, TokenRecord
from authproxy.sandbox.oauth2 import OAuth2Sandbox
from authproxy.sandbox.sellercenter import SellerCenterSandbox
from tests.conftest import oauth2_app, shared_store
from tests.procs import proxy_processes


async def _fire(urls: list[str], path: str, count: int) -> list[int]:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> int:
            async with session.get(urls[i % len(urls)] + path) as reply:
                body = await reply.read()
                assert reply.status == 200, (reply.status, body[:500])
                return reply.status

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def test_two_processes_200_requests_expired_token_one_token_call(serve, shared_redis, tmp_path):
    sandbox = SellerCenterSandbox({"app-1": "secret-1"})
    upstream = await serve(sandbox.app())
    base = str(upstream.make_url("")).rstrip("/")
    store = shared_store(shared_redis)
    expired = Token(access_token="gfg-stale", expires_at=1.0, obtained_at=0.0)
    await store.put(TokenKey("gfg", "shop1"), TokenRecord(token=expired), expected_version=0)
    await store.close()
    apps = {
        "gfg": {
            "platform": "sellercenter",
            "base_url": base,
            "client_id": "app-1",
            "client_secret": "secret-1",
        }
    }
    async with proxy_processes(apps, shared_redis, tmp_path, count=2) as procs:
        statuses = await _fire([p.url for p in procs], "/gfg/shop1/v2/orders", 200)
    logs = "\n".join(p.log() for p in procs)  # once they have stopped: every line is written
    assert statuses == [200] * 200
    assert "secret-1" not in logs and "gfg-stale" not in logs
    assert not any(token in logs for token in sandbox.book.access)
    assert sandbox.stats.token_calls == 1
    assert sandbox.stats.api_calls == 200


async def test_rotating_refresh_tokens_20_cycles_across_processes(serve, shared_redis, tmp_path):
    sandbox = OAuth2Sandbox("cid", "csecret", rotate=True)
    upstream = await serve(sandbox.app())
    base = str(upstream.make_url("")).rstrip("/")
    seed = sandbox.seed_refresh_token()
    apps = {"crm": oauth2_app(base, seed)}
    async with proxy_processes(apps, shared_redis, tmp_path, count=2) as procs:
        urls = [p.url for p in procs]
        for _ in range(20):
            statuses = await _fire(urls, "/crm/acme/api/contacts", 40)
            assert statuses == [200] * 40
            sandbox.book.expire_all()
        statuses = await _fire(urls, "/crm/acme/api/contacts", 40)
    assert statuses == [200] * 40
    assert sandbox.stats.reused_refresh_tokens == 0
    assert sandbox.stats.token_calls == 21  # the first token, then one per expiry
