"""The request hot path: at most one store read, none while the token is cached."""

from __future__ import annotations

import asyncio

from authproxy.models import TokenKey, TokenRecord
from authproxy.sandbox.sellercenter import SellerCenterSandbox
from authproxy.store.memory import MemoryStore
from tests.conftest import settings_for, url_of


class CountingStore(MemoryStore):
    """The real memory store, counting its reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get(self, key: TokenKey) -> TokenRecord | None:
        self.reads += 1
        return await super().get(key)


async def _proxy(serve, proxy_client, clock, **server):
    sandbox = SellerCenterSandbox({"app-1": "secret-1"}, clock=clock)
    base = url_of(await serve(sandbox.app()))
    app = {"platform": "sellercenter", "base_url": base, "client_id": "app-1", "client_secret": "secret-1"}
    store = CountingStore()
    client = await proxy_client(settings_for({"gfg": app}, **server), store, clock)
    assert (await client.get("/gfg/s1/v2/x")).status == 200  # warm: the token exists now
    store.reads = 0
    return client, store


async def test_no_store_read_while_the_token_is_cached(serve, proxy_client, clock):
    client, store = await _proxy(serve, proxy_client, clock)
    for _ in range(50):
        assert (await client.get("/gfg/s1/v2/x")).status == 200
    assert store.reads == 0


async def test_at_most_one_store_read_per_request_without_the_cache(serve, proxy_client, clock):
    client, store = await _proxy(serve, proxy_client, clock, token_cache_seconds=0)
    for _ in range(20):
        assert (await client.get("/gfg/s1/v2/x")).status == 200
    assert store.reads == 20
    replies = await asyncio.gather(*(client.get("/gfg/s1/v2/x") for _ in range(30)))
    assert all(r.status == 200 for r in replies)
    assert store.reads <= 50  # concurrent readers of one shop may share a read
