from __future__ import annotations

from authproxy.sandbox.sellercenter import SellerCenterSandbox
from tests.conftest import settings_for


async def test_get_through_sellercenter(serve, proxy_client, stores, clock):
    sandbox = SellerCenterSandbox({"app-1": "secret-1"}, clock=clock)
    upstream = await serve(sandbox.app())
    base = str(upstream.make_url("")).rstrip("/")
    settings = settings_for(
        {
            "gfg": {
                "platform": "sellercenter",
                "base_url": base,
                "client_id": "app-1",
                "client_secret": "secret-1",
            }
        }
    )
    client = await proxy_client(settings, stores.make(), clock)
    reply = await client.get("/gfg/shop1/v2/products?a=1&b=%20x", headers={"Authorization": "Bearer client"})
    body = await reply.json()
    assert reply.status == 200, body
    assert body["query"] == "a=1&b=%20x"
    assert body["headers"]["authorization"].startswith("Bearer gfg-")
    assert sandbox.stats.token_calls == 1
