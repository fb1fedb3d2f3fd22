"""README "Use with your SDK", TikTok Shop: tiktok-shop-api 0.1.0, its base_url at the proxy's shop prefix.

The SDK signs with the dummy secret it is given over the prefixed path; the proxy
re-signs (the sandbox checks it). Behind the `/<app>/<shop>` prefix the SDK's
path table never matches, so it sends no `shop_cipher`: the proxy adds the one
it looked up after `authorize`, and the sandbox checks it is the seller's. The
JSON body arrives byte for byte, a refresh + replay is invisible, and
authproxy's errors raise TikTokShopError with authproxy's message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any
from urllib.parse import parse_qsl

import pytest

from authproxy.runtime import RUNTIME
from authproxy.sandbox.tiktok import TikTokSandbox
from authproxy.store.memory import MemoryStore
from tests.conftest import need_sdk, settings_for, url_of

KEY, SECRET = "tt-app-key", "tt-app-secret"


class Rig:
    def __init__(self, sandbox: TikTokSandbox, client: Any) -> None:
        self.sandbox, self.client = sandbox, client
        self.sent: list[Any] = []  # the SDK's requests, as it sent them

    async def authorize(self, shop: str) -> dict[str, str]:
        """`authproxy authorize tt SHOP --code CODE`, as the CLI does it; the seller's shop."""
        code = self.sandbox.issue_auth_code()
        tokens = self.client.server.app[RUNTIME].apps["tt"].tokens
        await tokens.authorize(shop, code, None)
        [seller_shop] = self.sandbox.shops_of(code)
        return seller_shop

    def sdk(self, shop: str) -> Any:
        """The recipe: base_url at the proxy's shop prefix; dummy key, secret and token."""
        sdk, httpx = need_sdk("tiktok_shop_api"), need_sdk("httpx")
        sent = self.sent

        class Recording(httpx.HTTPTransport):  # type: ignore[misc,name-defined]
            def handle_request(self, request: Any) -> Any:
                sent.append(request)
                return super().handle_request(request)

        base_url = f"{url_of(self.client.server)}/tt/{shop}"
        return sdk.TikTokShop("dummy-key", "dummy-secret", access_token="dummy", base_url=base_url,
                              transport=Recording())  # fmt: skip


@pytest.fixture
async def rig(serve, proxy_client, clock, monkeypatch) -> Rig:
    monkeypatch.setattr(logging.getLogger("aiohttp.access"), "disabled", True)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    sandbox = TikTokSandbox(KEY, SECRET, clock=clock)  # each seller with a shop (and cipher) of its own
    base = url_of(await serve(sandbox.app()))
    app = {"platform": "tiktok", "base_url": base, "auth_url": base, "app_key": KEY, "app_secret": SECRET}
    return Rig(sandbox, await proxy_client(settings_for({"tt": app}), MemoryStore(), clock))


def order_search(sdk_models: Any) -> Any:
    return sdk_models.GetOrderListRequest(create_time_ge=1_700_000_000, buyer_user_id="buyer é")


async def test_shop_cipher_endpoint_after_authorize_with_no_cipher_in_config(rig):
    models = need_sdk("tiktok_shop_api.generated.models")
    seller_shop = await rig.authorize("shop1")
    client = rig.sdk("shop1")
    reply = await asyncio.to_thread(client.orders.get_order_list, page_size=20, body=order_search(models))
    echo = reply.additional_properties  # the sandbox's echo of what reached it
    assert reply.code == 0 and echo["path"] == "/order/202309/orders/search"
    reached = dict(parse_qsl(echo["query"]))
    assert reached["shop_cipher"] == seller_shop["cipher"]  # checked by the sandbox: the seller's
    assert reached["app_key"] == KEY and reached["page_size"] == "20"
    [request] = rig.sent
    assert "shop_cipher" not in dict(request.url.params)  # the SDK sent none: the proxy added it
    assert echo["body_sha256"] == hashlib.sha256(request.content).hexdigest()
    assert rig.sandbox.stats.rejected_api_calls == 0


async def test_get_authorized_shops_through_the_sdk(rig):
    seller_shop = await rig.authorize("shop1")
    reply = await asyncio.to_thread(rig.sdk("shop1").authorization.get_authorized_shops)
    assert reply.to_dict()["data"]["shops"] == [seller_shop]


async def test_tiktok_shop_api_never_sees_a_replay(rig):
    models = need_sdk("tiktok_shop_api.generated.models")
    await rig.authorize("shop1")
    client = rig.sdk("shop1")
    rig.sandbox.book.expire_all()  # TikTok now answers 105002
    reply = await asyncio.to_thread(client.orders.get_order_list, page_size=5, body=order_search(models))
    assert reply.code == 0
    assert rig.sandbox.stats.rejected_api_calls == 1 and rig.sandbox.stats.token_calls == 2  # code + refresh


async def test_tiktok_shop_api_error_carries_authproxys_message(rig):
    errors = need_sdk("tiktok_shop_api.errors")
    with pytest.raises(errors.TikTokShopError) as raised:
        await asyncio.to_thread(rig.sdk("nobody").orders.get_order_list, page_size=5)
    error = raised.value
    assert error.http_status == 404 and error.code == 404  # the problem's code is a string: the status
    assert "'nobody'" in error.message and "no token" in error.message  # authproxy's detail
    assert len(error.request_id) == 32  # authproxy's request id
