"""readyz follows the store: 503 store_unavailable while Redis is down, 200 once it is back.

A real redis-server of the test's own on a free port, stopped and started
again on the same port; healthz (liveness) stays 200 throughout, so an
orchestrator takes the pod out of rotation instead of restarting it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from authproxy.sandbox.sellercenter import SellerCenterSandbox
from authproxy.store.redis import RedisStore
from tests.conftest import settings_for, url_of
from tests.redis_server import redis_server_in

WITHIN = 15.0


@pytest.fixture
def redis_server(tmp_path):
    server = redis_server_in(tmp_path)
    server.start()
    yield server
    server.stop()


async def poll(client: Any, path: str, status: int) -> Any:
    """GET `path` until it answers `status` (bounded): the store's state changes outside us."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WITHIN
    while True:
        reply = await client.get(path)
        if reply.status == status:
            return reply
        assert loop.time() < deadline, f"{path} still answers {reply.status}, not {status}"
        await asyncio.sleep(0.05)


async def test_readyz_follows_redis_down_and_back(serve, proxy_client, redis_server, clock):
    sandbox = SellerCenterSandbox({"app-1": "secret-1"}, clock=clock)
    base = url_of(await serve(sandbox.app()))
    app = {"platform": "sellercenter", "base_url": base, "client_id": "app-1", "client_secret": "secret-1"}
    store = RedisStore.from_url(redis_server.url, "readyz-test")
    try:
        client = await proxy_client(settings_for({"gfg": app}), store, clock)
        assert (await client.get("/_authproxy/readyz")).status == 200

        redis_server.stop()
        reply = await poll(client, "/_authproxy/readyz", 503)
        assert reply.headers["Content-Type"] == "application/problem+json"
        assert reply.headers["X-AuthProxy-Error"] == "store_unavailable"
        problem = await reply.json()
        assert (problem["status"], problem["code"]) == (503, "store_unavailable")
        assert (await client.get("/_authproxy/healthz")).status == 200  # alive: do not restart it
        proxied = await client.get("/gfg/shop1/v2/orders")
        assert proxied.status == 503
        assert proxied.headers["X-AuthProxy-Error"] == "store_unavailable"

        redis_server.start()  # same port, empty (nothing was kept on disk)
        await poll(client, "/_authproxy/readyz", 200)
        assert (await client.get("/gfg/shop1/v2/orders")).status == 200
        assert sandbox.stats.token_calls == 1
    finally:
        await store.close()
