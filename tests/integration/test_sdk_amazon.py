"""README "Use with your SDK", Amazon: python-amazon-sp-api and amzn-sp-api, as a user would set them up.

Each SDK runs in a worker thread (both are synchronous) against a real proxy in
front of the Amazon sandbox: only its endpoint settings are changed and it gets
dummy credentials. The LWA call is answered by the proxy (never forwarded), its
placeholder token is replaced by the shop's, the garbled Host python-amazon-sp-api
sends over http is ignored (the sandbox checks Host), bodies arrive byte for
byte, a replay after a revoked token is invisible, and authproxy's own errors
raise the SDKs' normal exceptions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

import pytest

from authproxy.platforms.amazon import PLACEHOLDER_TOKEN
from authproxy.sandbox.amazon import SELLER, AmazonSandbox
from authproxy.store.memory import MemoryStore
from tests.conftest import need_sdk, settings_for, url_of

CLIENT_ID, CLIENT_SECRET = "amzn1.application-oa2-client.proxy", "amzn1.oa2-cs.v1.proxy-secret"
#: what the SDKs are given: dummies, which must never reach the sandbox nor a log line
SDK_ID, SDK_SECRET, SDK_REFRESH = "dummy-client-id", "dummy-sdk-secret-3c1d", "Atzr|dummy-sdk-refresh-9e2f"


class Rig:
    def __init__(self, sandbox: AmazonSandbox, proxy: str) -> None:
        self.sandbox, self.proxy = sandbox, proxy

    def shop(self, shop: str = "seller1") -> str:
        return f"{self.proxy}/amz/{shop}"

    def nothing_leaked(self, logs: Any) -> None:
        forms = self.sandbox.token_requests
        assert forms and all(form["client_secret"] == CLIENT_SECRET for form in forms)  # the proxy's own
        assert all(SDK_REFRESH not in form.values() for form in forms)
        assert SDK_SECRET not in logs.text() and SDK_REFRESH not in logs.text()


@pytest.fixture
async def rig(serve, proxy_client, monkeypatch) -> Rig:
    monkeypatch.setattr(logging.getLogger("aiohttp.access"), "disabled", True)  # the sandbox's own log
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    sandbox = AmazonSandbox(CLIENT_ID, CLIENT_SECRET)
    sandbox.payload_envelope = True  # {"payload": <echo>}, as SP-API answers
    base = url_of(await serve(sandbox.app()))
    shops = {
        "seller1": {"refresh_token": sandbox.seed_refresh_token()},
        "stale": {"refresh_token": "Atzr|gone"},
    }
    app = {"platform": "amazon", "base_url": base, "auth_url": base, "client_id": CLIENT_ID,
           "client_secret": CLIENT_SECRET, "shops": shops}  # fmt: skip
    client = await proxy_client(settings_for({"amz": app}), MemoryStore())
    return Rig(sandbox, url_of(client.server))


# -- python-amazon-sp-api 2.1.35 ------------------------------------------------------------------


def saleweaver(rig: Rig, monkeypatch: Any, shop: str = "seller1") -> Any:
    """The recipe: point LWA and the endpoint at the proxy; dummy credentials."""
    sp_api = need_sdk("sp_api.api")
    auth = need_sdk("sp_api.auth")
    need_sdk("sp_api.auth.access_token_client").cache.clear()  # the SDK's process-wide token cache
    monkeypatch.setattr(auth.AccessTokenClient, "scheme", "http://")
    monkeypatch.setattr(auth.AccessTokenClient, "host", rig.shop(shop).removeprefix("http://"))
    credentials = {"lwa_app_id": SDK_ID, "lwa_client_secret": SDK_SECRET}
    # timeout: httpx's 5 s default is tight for a loaded CI machine (not part of the recipe)
    sellers = sp_api.Sellers(refresh_token=SDK_REFRESH, credentials=credentials, timeout=30)
    sellers.endpoint = rig.shop(shop)
    return sellers


async def test_python_amazon_sp_api_works_with_endpoint_settings_only(rig, monkeypatch, logs):
    sellers = saleweaver(rig, monkeypatch)
    hosts: list[str] = []
    sellers._transport._client.event_hooks["request"].append(
        lambda request: hosts.append(request.headers["host"])
    )
    reply = await asyncio.to_thread(sellers.get_marketplace_participation)
    echo = reply.payload  # the sandbox's echo of what reached it
    assert echo["ok"] and echo["path"] == "/sellers/v1/marketplaceParticipations"
    sent = echo["headers"]["x-amz-access-token"]
    assert sent != PLACEHOLDER_TOKEN and rig.sandbox.grants[sent] == SELLER
    assert hosts == [rig.shop()[8:]]  # garbled ("27.0.0.1:…/amz/seller1"): authproxy sends its own
    assert rig.sandbox.stats.rejected_api_calls == 0
    rig.nothing_leaked(logs)


async def test_python_amazon_sp_api_post_body_arrives_byte_for_byte(rig, monkeypatch):
    orders = need_sdk("sp_api.api.orders.orders_v0").OrdersV0
    sellers = saleweaver(rig, monkeypatch)  # the same recipe, for another API
    client = orders(
        refresh_token=SDK_REFRESH,
        credentials={"lwa_app_id": SDK_ID, "lwa_client_secret": SDK_SECRET},
        timeout=30,
    )
    client.endpoint = sellers.endpoint
    bodies: list[bytes] = []
    client._transport._client.event_hooks["request"].append(lambda request: bodies.append(request.read()))
    payload = {"marketplaceId": "ATVPDKIKX0DER", "packageDetail": {"packageReferenceId": "1", "note": "café"}}
    reply = await asyncio.to_thread(client.confirm_shipment, "902-1845936-5435065", **payload)
    echo = reply.payload
    assert (
        echo["method"] == "POST"
        and echo["path"] == "/orders/v0/orders/902-1845936-5435065/shipmentConfirmation"
    )
    assert echo["body_sha256"] == hashlib.sha256(bodies[0]).hexdigest() and b"caf" in bodies[0]


async def test_python_amazon_sp_api_never_sees_a_replay(rig, monkeypatch):
    sellers = saleweaver(rig, monkeypatch)
    await asyncio.to_thread(sellers.get_marketplace_participation)
    rig.sandbox.revoke_all()  # the shop's token is now "revoked, malformed or invalid"
    reply = await asyncio.to_thread(sellers.get_marketplace_participation)
    assert reply.payload["ok"] and reply.headers["X-AuthProxy-Retried"] == "1"
    assert rig.sandbox.stats.rejected_api_calls == 1 and rig.sandbox.stats.token_calls == 2


@pytest.mark.parametrize(
    ("shop", "status", "code"), [("nobody", 404, "unknown_shop"), ("stale", 401, "needs_reauthorization")]
)
async def test_python_amazon_sp_api_raises_on_authproxys_errors(rig, monkeypatch, shop, status, code):
    base = need_sdk("sp_api.base")
    sellers = saleweaver(rig, monkeypatch, shop)
    with pytest.raises(base.SellingApiException) as raised:
        await asyncio.to_thread(sellers.get_marketplace_participation)
    error = raised.value
    if status == 404:
        assert isinstance(error, base.SellingApiNotFoundException)
    assert error.amzn_code == code and shop in error.message
    assert error.headers["X-AuthProxy-Error"] == code


# -- amzn-sp-api 1.13.0 (Amazon's own) ---------------------------------------------------------------


def amazons(rig: Rig, shop: str = "seller1") -> Any:
    """The recipe: SPAPIClient with oauth_endpoint and endpoint at the proxy; dummy credentials."""
    spapi = need_sdk("spapi")
    config = spapi.SPAPIConfig(
        client_id=SDK_ID, client_secret=SDK_SECRET, refresh_token=SDK_REFRESH, region="NA"
    )
    client = spapi.SPAPIClient(
        config, oauth_endpoint=rig.shop(shop) + "/auth/o2/token", endpoint=rig.shop(shop)
    )
    return need_sdk("spapi.api.sellers_v1.sellers_api").SellersApi(client.api_client)


async def test_amzn_sp_api_spapiclient_works_with_endpoint_settings_only(rig, logs):
    api = await asyncio.to_thread(amazons, rig)  # SPAPIClient fetches its LWA token here: from the proxy
    assert api.api_client.default_headers["x-amz-access-token"] == PLACEHOLDER_TOKEN
    # the raw reply: the sandbox's echo is no marketplace list the SDK's model would take
    raw = await asyncio.to_thread(api.get_marketplace_participations, _preload_content=False)
    assert raw.status == 200
    echo = json.loads(raw.data)["payload"]
    assert echo["path"] == "/sellers/v1/marketplaceParticipations"
    assert rig.sandbox.grants[echo["headers"]["x-amz-access-token"]] == SELLER
    assert rig.sandbox.stats.api_calls == 1 and rig.sandbox.stats.rejected_api_calls == 0
    rig.nothing_leaked(logs)


async def test_amzn_sp_api_never_sees_a_replay(rig):
    api = await asyncio.to_thread(amazons, rig)
    first = await asyncio.to_thread(api.get_marketplace_participations, _preload_content=False)
    rig.sandbox.revoke_all()  # the shop's token is now "revoked, malformed or invalid"
    second = await asyncio.to_thread(api.get_marketplace_participations, _preload_content=False)
    assert (first.status, second.status) == (200, 200)
    assert second.getheader("X-AuthProxy-Retried") == "1" and rig.sandbox.stats.rejected_api_calls == 1


async def test_amzn_sp_api_raises_with_authproxys_error(rig):
    rest = need_sdk("spapi.rest")
    api = await asyncio.to_thread(amazons, rig, "nobody")
    with pytest.raises(rest.ApiException) as raised:
        await asyncio.to_thread(api.get_marketplace_participations)
    assert raised.value.status == 404
    body = json.loads(raised.value.body)
    assert body["errors"][0]["code"] == body["code"] == "unknown_shop"
    assert "nobody" in str(raised.value)  # its message shows authproxy's detail
