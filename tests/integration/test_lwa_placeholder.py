"""An Amazon app's LWA token call is answered by authproxy (issue 15, fix 1), never forwarded."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from authproxy.platforms.amazon import PLACEHOLDER_TOKEN
from authproxy.sandbox.amazon import SELLER, AmazonSandbox
from authproxy.sandbox.oauth2 import OAuth2Sandbox
from authproxy.store.memory import MemoryStore
from tests.conftest import oauth2_app, settings_for, url_of

SDK_SECRET = "amzn1.oa2-cs.v1.the-clients-own-secret-5f1e"
SDK_REFRESH = "Atzr|IwEB-the-clients-own-refresh-token-77aa"


@pytest.fixture
async def rig(serve, proxy_client, clock, monkeypatch, request) -> Any:
    monkeypatch.setattr(logging.getLogger("aiohttp.access"), "disabled", True)  # the sandboxes' own log
    amazon = AmazonSandbox("cid", "csecret", clock=clock)
    oauth = OAuth2Sandbox("cid", "csecret", clock=clock)
    amz, o2 = url_of(await serve(amazon.app())), url_of(await serve(oauth.app()))
    seed = amazon.seed_refresh_token()
    apps = {
        "amz": {"platform": "amazon", "base_url": amz, "auth_url": amz, "client_id": "cid",
                "client_secret": "csecret", "shops": {"seller1": {"refresh_token": seed}}},
        "o2": oauth2_app(o2),
    }  # fmt: skip
    server = getattr(request, "param", {})
    client = await proxy_client(settings_for(apps, **server), MemoryStore(), clock)
    return amazon, oauth, client


def sdk_form(grant: str = "refresh_token") -> dict[str, str]:
    form = {"grant_type": grant, "client_id": "amzn1.application-oa2-client.sdk", "client_secret": SDK_SECRET}
    if grant == "refresh_token":
        form["refresh_token"] = SDK_REFRESH
    elif grant == "client_credentials":
        form["scope"] = "sellingpartnerapi::notifications"
    else:
        form["code"] = "ANDcode"
    return form


@pytest.mark.parametrize("grant", ["refresh_token", "client_credentials"])
async def test_placeholder_answered_here_and_never_forwarded(rig, logs, grant):
    amazon, _, client = rig
    reply = await client.post("/amz/seller1/auth/o2/token", data=sdk_form(grant))
    body = await reply.json()
    assert reply.status == 200, body
    assert body == {"access_token": PLACEHOLDER_TOKEN, "token_type": "bearer", "expires_in": 3600}
    assert reply.headers["Cache-Control"] == "no-store" and reply.headers["X-Request-Id"]
    assert amazon.stats.token_calls == 0 and amazon.token_requests == []  # nothing reached LWA
    assert "/auth/o2/token -> 200" in logs.text()
    assert SDK_SECRET not in logs.text() and SDK_REFRESH not in logs.text()


async def test_calls_with_the_placeholder_carry_the_shops_token(rig):
    amazon, _, client = rig
    await client.post("/amz/seller1/auth/o2/token", data=sdk_form())
    reply = await client.get(
        "/amz/seller1/sellers/v1/marketplaceParticipations", headers={"x-amz-access-token": PLACEHOLDER_TOKEN}
    )
    body = await reply.json()
    assert reply.status == 200, body
    sent = body["headers"]["x-amz-access-token"]
    assert sent != PLACEHOLDER_TOKEN and amazon.grants[sent] == SELLER
    assert [form["client_secret"] for form in amazon.token_requests] == ["csecret"]  # the proxy's own only


async def test_a_code_exchange_is_refused_in_lwa_and_sp_api_shapes(rig, logs):
    amazon, _, client = rig
    reply = await client.post("/amz/seller1/auth/o2/token", data=sdk_form("authorization_code"))
    body = await reply.json(content_type="application/problem+json")
    assert reply.status == 400 and reply.headers["X-AuthProxy-Error"] == body["code"] == "unsupported_grant"
    assert body["error"] == "unsupported_grant_type" and body["error_description"] == body["detail"]
    assert body["errors"][0]["code"] == "unsupported_grant"
    assert amazon.stats.token_calls == 0 and SDK_SECRET not in logs.text()


async def test_other_platforms_proxy_the_path(rig):
    _, oauth, client = rig
    reply = await client.post("/o2/acme/auth/o2/token", data=sdk_form())
    assert "X-AuthProxy-Error" not in reply.headers and reply.status == 404  # the upstream's own 404
    assert oauth.stats.token_calls == 1  # proxied: the proxy got the shop's token to send it


async def test_unknown_apps_and_bad_paths_are_the_proxys_errors(rig):
    _, _, client = rig
    reply = await client.post("/nope/seller1/auth/o2/token", data=sdk_form())
    assert reply.headers["X-AuthProxy-Error"] == "unknown_app"


@pytest.mark.parametrize("rig", [{"body_timeout": 0.5}], indirect=True)
async def test_a_form_that_never_arrives_is_a_request_timeout(rig):
    _, _, client = rig
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(
        b"POST /amz/seller1/auth/o2/token HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type="
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 408") and b"X-AuthProxy-Error: request_timeout" in head
    writer.close()
