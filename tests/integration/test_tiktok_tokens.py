"""TikTok Shop tokens through the real proxy: refresh on expiry, 105002 replay, rejections, secrets."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from authproxy.errors import RefreshRejected
from authproxy.models import HttpReply, TokenKey, TokenRecord
from authproxy.platforms.tiktok import TikTok
from authproxy.settings import TikTokApp
from authproxy.store import ANY_VERSION
from tests.integration.test_tiktok import APP_KEY, APP_SECRET, CIPHER, ORDERS, start

WEEK = 7 * 86400


async def test_expiry_sends_the_exact_refresh_request_and_stores_the_rotated_token(
    serve, proxy_client, stores, clock
):
    rig = await start(serve, proxy_client, stores.make(), clock)
    seeded = await rig.seed(expires_in=60)
    clock.advance(120)
    reply = await rig.client.get(ORDERS)
    echo = await reply.json()
    assert reply.status == 200, echo
    assert rig.sandbox.token_queries == [
        {
            "app_key": APP_KEY,
            "app_secret": APP_SECRET,
            "refresh_token": seeded.refresh_token,
            "grant_type": "refresh_token",
        }
    ]
    stored = await rig.stored()
    assert stored.refresh_token != seeded.refresh_token  # rotated: the returned one is kept
    assert stored.refresh_token in rig.sandbox.book.refresh
    assert stored.expires_at == clock.now() + WEEK  # absolute stamp, read as such
    assert echo["headers"]["x-tts-access-token"] == stored.access_token
    assert "X-AuthProxy-Retried" not in reply.headers


@pytest.mark.parametrize("status", [401, 200])
async def test_105002_refreshes_once_and_replays_once(serve, proxy_client, stores, clock, status):
    rig = await start(serve, proxy_client, stores.make(), clock)
    rig.sandbox.error_status = status  # the HTTP status of 105002 is unverified: both readings
    await rig.seed()
    rig.sandbox.book.expire_all()  # revoked early: the proxy still thinks the token is good
    reply = await rig.client.post(ORDERS + "/search", json={"page_size": 5})
    echo = await reply.json()
    assert reply.status == 200, echo
    assert reply.headers["X-AuthProxy-Retried"] == "1"
    assert rig.sandbox.stats.token_calls == 1
    assert (rig.sandbox.stats.rejected_api_calls, rig.sandbox.stats.api_calls) == (1, 1)
    assert echo["headers"]["x-tts-access-token"] == (await rig.stored()).access_token


async def test_invalid_token_header_refreshes_once_and_replays(serve, proxy_client, stores, clock):
    rig = await start(serve, proxy_client, stores.make(), clock)
    await rig.seed(access="TTP_at-unknown")
    reply = await rig.client.get(ORDERS)
    assert reply.status == 200, await reply.text()
    assert reply.headers["X-AuthProxy-Retried"] == "1"
    assert rig.sandbox.stats.token_calls == 1


async def test_a_replay_is_never_replayed(serve, proxy_client, stores, clock):
    rig = await start(serve, proxy_client, stores.make(), clock)
    rig.sandbox.book.lifetime = 0  # every token the sandbox hands out is already expired
    await rig.seed()
    rig.sandbox.book.expire_all()
    reply = await rig.client.get(ORDERS)
    body = await reply.json()
    assert (reply.status, body["code"]) == (401, 105002)
    assert reply.headers["X-AuthProxy-Retried"] == "1"
    assert rig.sandbox.stats.token_calls == 1
    assert rig.sandbox.stats.rejected_api_calls == 2


@pytest.mark.parametrize("dead", ["rejected", "refresh_token_expired"])
async def test_dead_refresh_token_marks_the_shop_without_looping(serve, proxy_client, stores, clock, dead):
    rig = await start(serve, proxy_client, stores.make(), clock)
    if dead == "rejected":
        rig.sandbox.knobs.reject_refresh = True  # 36004005
    else:
        rig.sandbox.book.refresh_lifetime = 30  # 36004001 "rt has expired"
    await rig.seed(expires_in=60)
    clock.advance(120)
    for _ in range(2):
        reply = await rig.client.get(ORDERS)
        problem = await reply.json(content_type=None)
        assert reply.status == 401 and problem["code"] == "needs_reauthorization", problem
    assert rig.sandbox.stats.token_calls == 1
    assert rig.sandbox.stats.api_calls == 0


async def test_token_endpoint_failure_is_refresh_failed(serve, proxy_client, stores, clock):
    rig = await start(serve, proxy_client, stores.make(), clock)
    rig.sandbox.knobs.token_status = 503
    await rig.seed(expires_in=60)
    clock.advance(120)
    reply = await rig.client.get(ORDERS)
    problem = await reply.json(content_type=None)
    assert reply.status == 502 and problem["code"] == "refresh_failed", problem
    assert "Retry-After" in reply.headers


@pytest.fixture
def quiet_server_access_logs():
    """aiohttp's own access log is off in `serve` (and it is the sandbox's, i.e. TikTok's, here)."""
    logger = logging.getLogger("aiohttp.access")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


async def test_no_secret_reaches_the_logs(serve, proxy_client, stores, clock, logs, quiet_server_access_logs):
    rig = await start(serve, proxy_client, stores.make(), clock)
    seeded = await rig.seed(expires_in=60)
    clock.advance(120)
    assert (await rig.client.get(ORDERS + "?access_token=client-secret-token")).status == 200
    rig.sandbox.book.expire_all()
    assert (await rig.client.get(ORDERS)).status == 200
    stored = await rig.stored()
    text = logs.text()
    assert "refreshed token for tt/shop1" in text  # the log was captured
    for secret in (APP_SECRET, seeded.access_token, seeded.refresh_token, stored.access_token):
        assert secret not in text
    assert stored.refresh_token is not None and stored.refresh_token not in text
    assert "client-secret-token" not in text


async def test_concurrent_requests_on_two_instances_refresh_once(serve, proxy_client, redis_stores, clock):
    rig = await start(serve, proxy_client, redis_stores.make(), clock)
    other = await proxy_client(rig.settings, redis_stores.make(), clock)
    await rig.seed(expires_in=60)
    clock.advance(120)
    replies = await asyncio.gather(*(client.get(ORDERS) for client in (rig.client, other) * 10))
    assert [reply.status for reply in replies] == [200] * 20
    assert rig.sandbox.stats.token_calls == 1
    assert rig.sandbox.stats.reused_refresh_tokens == 0


async def test_code_exchange_against_the_sandbox(serve, proxy_client, stores, clock):
    rig = await start(serve, proxy_client, stores.make(), clock)
    settings = TikTokApp(platform="tiktok", app_key=APP_KEY, app_secret=APP_SECRET)  # type: ignore[arg-type]
    tiktok = TikTok(settings.model_copy(update={"auth_url": rig.sandbox_url}))
    code = rig.sandbox.issue_auth_code()
    async with aiohttp.ClientSession() as session:
        replies = []
        for _ in range(2):  # the code is single use
            request = tiktok.code_request("shop1", code, None, clock.now())
            async with session.get(request.url) as response:
                replies.append(HttpReply(response.status, dict(response.headers), await response.read()))
    tokens = tiktok.parse_code_reply("shop1", replies[0], clock.now())
    token = tokens["shop1"]
    assert token.expires_at == clock.now() + WEEK and token.refresh_token in rig.sandbox.book.refresh
    with pytest.raises(RefreshRejected):
        tiktok.parse_code_reply("shop1", replies[1], clock.now())
    await rig.store.put(TokenKey("tt", "shop1"), TokenRecord(token=token), expected_version=ANY_VERSION)
    reply = await rig.client.get(ORDERS)
    assert reply.status == 200 and (await reply.json())["headers"]["x-tts-access-token"] == token.access_token
    assert CIPHER in (await reply.json())["query"]
