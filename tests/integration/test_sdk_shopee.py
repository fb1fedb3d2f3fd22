"""README "Use with your SDK", Shopee: pyshopee 1.4.0 (`pyshopee2`), its host pointed at the proxy.

pyshopee2 signs with the partner key it is given and sends its own access token
and shop id; the proxy replaces all of them (the sandbox checks the sign), the
JSON body arrives byte for byte and a refresh + replay is invisible. pyshopee2
drops the body of any non-2xx reply: on authproxy's errors it returns
{"error": <HTTP status>, ...}, as it does for Shopee's own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

import pytest

from authproxy.store.memory import MemoryStore
from tests.conftest import need_sdk, url_of
from tests.integration.test_shopee_kit import APP, PARTNER_ID, SHOP, make_rig, params


class OneStore:
    def make(self) -> MemoryStore:
        return MemoryStore()


@pytest.fixture
async def rig(serve, proxy_client, clock, monkeypatch) -> Any:
    monkeypatch.setattr(logging.getLogger("aiohttp.access"), "disabled", True)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    rig = await make_rig(serve, proxy_client, OneStore(), clock)
    rig.token = await rig.seed()
    return rig


def pyshopee(rig: Any, shop: str = SHOP) -> Any:
    """The recipe: the SDK's host at the proxy's shop prefix; dummy key and token."""
    client = need_sdk("pyshopee2").Client(
        shop_id=shop, partner_id=PARTNER_ID, partner_key="dummy-key", redirect_url="", access_token="dummy"
    )
    client.host = f"{url_of(rig.client.server)}/{APP}/{shop}"
    return client


async def test_pyshopee2_calls_are_signed_by_the_proxy(rig):
    info = await asyncio.to_thread(pyshopee(rig).shop.get_shop_info)
    assert info["error"] == "" and info["path"] == "/api/v2/shop/get_shop_info"
    sent = params(info["query"])
    assert sent["access_token"] == [rig.token.access_token] and sent["shop_id"] == [SHOP]
    assert rig.sandbox.stats.rejected_api_calls == 0  # its sign checked out


async def test_pyshopee2_post_body_arrives_byte_for_byte(rig):
    item = {"item_name": "Kopi é", "original_price": 1.5, "weight": 0.2, "image": {"image_id_list": ["a"]}}
    echo = await asyncio.to_thread(pyshopee(rig).product.add_item, **item)
    assert echo["method"] == "POST" and echo["error"] == ""
    sent = json.dumps(item, allow_nan=False).encode()  # how requests serialises json=
    assert echo["body_sha256"] == hashlib.sha256(sent).hexdigest()


async def test_pyshopee2_never_sees_a_replay(rig):
    client = pyshopee(rig)
    await asyncio.to_thread(client.shop.get_shop_info)
    rig.sandbox.book.expire_all()  # Shopee now answers invalid_acceess_token
    info = await asyncio.to_thread(client.shop.get_shop_info)
    assert info["error"] == ""
    assert rig.sandbox.stats.rejected_api_calls == 1 and rig.sandbox.stats.token_calls == 1


async def test_pyshopee2_sees_only_the_status_of_authproxys_errors(rig):
    answer = await asyncio.to_thread(pyshopee(rig, "999").shop.get_shop_info)
    assert answer == {"request_id": None, "error": 404, "msg": "http error code"}  # its own words
