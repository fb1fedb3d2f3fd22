"""The refresh protocol through the real app: replay once, adopt, back off, restart."""

from __future__ import annotations

import asyncio
import hashlib
import os

from aiohttp import web

from authproxy.app import create_app
from authproxy.models import TokenKey
from authproxy.runtime import RUNTIME
from authproxy.sandbox.oauth2 import OAuth2Sandbox
from authproxy.sandbox.sellercenter import SellerCenterSandbox
from tests.conftest import oauth2_app as shared_oauth2_app
from tests.conftest import settings_for, url_of


def oauth2_app(base: str, seed: str | None = None, **extra: object) -> dict[str, object]:
    return shared_oauth2_app(base, seed, client_secret="csecret-do-not-log", **extra)


async def start_oauth2(serve, clock, rotate=True):
    sandbox = OAuth2Sandbox("cid", "csecret-do-not-log", clock=clock, rotate=rotate)
    server = await serve(sandbox.app())
    return sandbox, str(server.make_url("")).rstrip("/")


async def test_invalid_token_on_post_refreshes_once_and_replays_identical_body(
    serve, proxy_client, stores, clock, logs
):
    sandbox, base = await start_oauth2(serve, clock)
    seed = sandbox.seed_refresh_token()
    client = await proxy_client(settings_for({"crm": oauth2_app(base, seed)}), stores.make(), clock)
    assert (await client.get("/crm/acme/api/ping")).status == 200
    sandbox.book.expire_all()  # the platform revokes: our token still looks valid by time
    body = os.urandom(3000) + b'{"weird":  \n "json" }'
    reply = await client.post(
        "/crm/acme/api/contacts", data=body, headers={"Content-Type": "application/json"}
    )
    echoed = await reply.json()
    assert reply.status == 200
    assert reply.headers["X-AuthProxy-Retried"] == "1"
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert sandbox.stats.token_calls == 2  # the first token, then exactly one refresh
    assert sandbox.stats.rejected_api_calls == 1
    assert sandbox.stats.reused_refresh_tokens == 0
    assert "csecret-do-not-log" not in logs.text()
    for token in [*sandbox.book.access, *sandbox.book.refresh, *sandbox.book.used_refresh, seed]:
        assert token not in logs.text()


async def test_upstream_that_always_says_invalid_is_called_exactly_twice(serve, proxy_client, stores, clock):
    sandbox, token_base = await start_oauth2(serve, clock)
    calls = []

    async def always_401(request: web.Request) -> web.Response:
        calls.append(await request.read())
        return web.json_response({"error": "invalid_token", "n": len(calls)}, status=401)

    api = web.Application()
    api.router.add_route("*", "/{tail:.*}", always_401)
    api_base = url_of(await serve(api))
    app = oauth2_app(api_base, token_url=token_base + "/oauth/token")
    client = await proxy_client(settings_for({"crm": app}), stores.make(), clock)
    reply = await client.post("/crm/acme/things", data=b"payload")
    assert reply.status == 401
    assert await reply.json() == {"error": "invalid_token", "n": 2}  # the upstream's answer
    assert "X-AuthProxy-Error" not in reply.headers
    assert reply.headers["X-AuthProxy-Retried"] == "1"
    assert calls == [b"payload", b"payload"]
    assert sandbox.stats.token_calls == 2


async def test_other_instance_refreshed_so_the_newer_token_is_used_without_refreshing(
    serve, proxy_client, redis_stores, clock
):
    sandbox, base = await start_oauth2(serve, clock)
    settings = settings_for({"crm": oauth2_app(base, sandbox.seed_refresh_token())})
    first = await proxy_client(settings, redis_stores.make(), clock)
    second = await proxy_client(settings, redis_stores.make(), clock)
    assert (await first.get("/crm/acme/api/a")).status == 200
    assert (await second.get("/crm/acme/api/a")).status == 200  # both hold token 1 now
    sandbox.book.expire_all()
    assert (await first.get("/crm/acme/api/b")).status == 200  # refreshes to token 2
    reply = await second.get("/crm/acme/api/c")  # sends token 1, is told it is invalid
    assert reply.status == 200 and reply.headers["X-AuthProxy-Retried"] == "1"
    assert sandbox.stats.token_calls == 2  # the second instance adopted token 2
    assert sandbox.stats.reused_refresh_tokens == 0


async def test_streamed_body_is_not_replayed(serve, proxy_client, stores, clock):
    sandbox, base = await start_oauth2(serve, clock)
    settings = settings_for({"crm": oauth2_app(base, sandbox.seed_refresh_token())}, max_replay_body=1024)
    client = await proxy_client(settings, stores.make(), clock)
    assert (await client.get("/crm/acme/api/a")).status == 200
    sandbox.book.expire_all()
    reply = await client.post("/crm/acme/api/upload", data=b"z" * 5000)
    assert reply.status == 401  # the platform's answer, passed through
    assert "X-AuthProxy-Retried" not in reply.headers
    assert sandbox.stats.token_calls == 1


async def test_concurrent_requests_share_one_refresh(serve, proxy_client, redis_stores, clock):
    sandbox = SellerCenterSandbox({"app-1": "secret-1"}, clock=clock)
    base = url_of(await serve(sandbox.app()))
    app = {"platform": "sellercenter", "base_url": base, "client_id": "app-1", "client_secret": "secret-1"}
    settings = settings_for({"gfg": app})
    clients = [await proxy_client(settings, redis_stores.make(), clock) for _ in range(3)]
    replies = await asyncio.gather(*(clients[i % 3].get("/gfg/s1/v2/x") for i in range(150)))
    assert [r.status for r in replies] == [200] * 150
    assert sandbox.stats.token_calls == 1
    clock.advance(3600)  # every instance's token expired
    replies = await asyncio.gather(*(clients[i % 3].get("/gfg/s1/v2/x") for i in range(150)))
    assert [r.status for r in replies] == [200] * 150
    assert sandbox.stats.token_calls == 2


async def test_proactive_refresh_happens_before_expiry_in_the_background(serve, proxy_client, stores, clock):
    sandbox = SellerCenterSandbox({"app-1": "secret-1"}, clock=clock)
    base = url_of(await serve(sandbox.app()))
    app = {"platform": "sellercenter", "base_url": base, "client_id": "app-1", "client_secret": "secret-1"}
    client = await proxy_client(settings_for({"gfg": app}), stores.make(), clock)
    first = await (await client.get("/gfg/s1/v2/x")).json()
    clock.advance(3600 - 100)  # inside the leeway (10 % of 1 h, at most 5 min, jittered)
    second = await (await client.get("/gfg/s1/v2/x")).json()
    assert second["headers"]["authorization"] == first["headers"]["authorization"]  # served at once
    await client.server.app[RUNTIME].drain()
    third = await (await client.get("/gfg/s1/v2/x")).json()
    assert third["headers"]["authorization"] != first["headers"]["authorization"]
    assert sandbox.stats.token_calls == 2


async def test_failed_refresh_backs_off_and_keeps_serving_a_valid_token(serve, proxy_client, stores, clock):
    sandbox = SellerCenterSandbox({"app-1": "secret-1"}, clock=clock)
    base = url_of(await serve(sandbox.app()))
    app = {"platform": "sellercenter", "base_url": base, "client_id": "app-1", "client_secret": "secret-1"}
    client = await proxy_client(settings_for({"gfg": app}), stores.make(), clock)
    assert (await client.get("/gfg/s1/v2/x")).status == 200
    sandbox.knobs.token_status = 503
    clock.advance(3600 - 100)
    for _ in range(5):
        assert (await client.get("/gfg/s1/v2/x")).status == 200
        await client.server.app[RUNTIME].drain()
    assert sandbox.stats.token_calls == 2  # one failed attempt, then the cooldown holds
    clock.advance(200)  # expired, and past the first backoff: one more attempt, failing
    for _ in range(3):  # then answered from the cooldown, without calling the endpoint
        reply = await client.get("/gfg/s1/v2/x")
        assert reply.status == 502
        assert reply.headers["X-AuthProxy-Error"] == "refresh_failed"
        assert int(reply.headers["Retry-After"]) >= 1
    assert sandbox.stats.token_calls == 3
    sandbox.knobs.token_status = None
    clock.advance(10)  # past the second backoff step (2 s, jittered)
    assert (await client.get("/gfg/s1/v2/x")).status == 200
    assert sandbox.stats.token_calls == 4


async def test_rejected_refresh_marks_the_shop_and_does_not_loop(serve, proxy_client, stores, clock):
    sandbox, base = await start_oauth2(serve, clock)
    client = await proxy_client(
        settings_for({"crm": oauth2_app(base, sandbox.seed_refresh_token())}), stores.make(), clock
    )
    assert (await client.get("/crm/acme/api/a")).status == 200
    sandbox.knobs.reject_refresh = True
    clock.advance(7200)
    for _ in range(3):
        reply = await client.get("/crm/acme/api/a")
        problem = await reply.json()
        assert reply.status == 401
        assert problem["code"] == "needs_reauthorization"
        assert reply.headers["Content-Type"] == "application/problem+json"
    assert sandbox.stats.token_calls == 2  # one refused refresh, no retry loop


async def test_restart_keeps_the_tokens(serve, redis_stores, clock, aiohttp_client):
    sandbox = SellerCenterSandbox({"app-1": "secret-1"}, clock=clock)
    base = url_of(await serve(sandbox.app()))
    app = {"platform": "sellercenter", "base_url": base, "client_id": "app-1", "client_secret": "secret-1"}
    settings = settings_for({"gfg": app})
    before = await aiohttp_client(create_app(settings, clock=clock, store=redis_stores.make()))
    assert (await before.get("/gfg/s1/v2/x")).status == 200
    await before.close()
    after = await aiohttp_client(create_app(settings, clock=clock, store=redis_stores.make()))
    assert (await after.get("/gfg/s1/v2/x")).status == 200
    assert sandbox.stats.token_calls == 1
    assert sandbox.stats.api_calls == 2


async def test_lock_holder_that_died_is_taken_over_after_the_ttl(serve, proxy_client, redis_stores, clock):
    sandbox = SellerCenterSandbox({"app-1": "secret-1"}, clock=clock)
    base = url_of(await serve(sandbox.app()))
    app = {"platform": "sellercenter", "base_url": base, "client_id": "app-1", "client_secret": "secret-1"}
    settings = settings_for({"gfg": app}, lock_ttl=0.3, token_timeout=0.2)
    store = redis_stores.make()
    dead = store.lock(TokenKey("gfg", "s1"), 0.3)
    assert await dead.acquire()  # a worker that took the lock and died
    client = await proxy_client(settings, store, clock)
    reply = await client.get("/gfg/s1/v2/x")
    assert reply.status == 200
    assert sandbox.stats.token_calls == 1


async def test_a_refresh_held_elsewhere_too_long_answers_refresh_busy(
    serve, proxy_client, redis_stores, clock
):
    sandbox = SellerCenterSandbox({"app-1": "secret-1"}, clock=clock)
    base = url_of(await serve(sandbox.app()))
    app = {"platform": "sellercenter", "base_url": base, "client_id": "app-1", "client_secret": "secret-1"}
    settings = settings_for({"gfg": app}, lock_ttl=0.2, token_timeout=0.1)
    store = redis_stores.make()
    holder = store.lock(TokenKey("gfg", "s1"), 30)  # a worker configured with a far longer TTL, stuck
    assert await holder.acquire()
    client = await proxy_client(settings, store, clock)
    reply = await client.get("/gfg/s1/v2/x")
    problem = await reply.json()
    assert reply.status == 503 and problem["code"] == "refresh_busy"
    assert reply.headers["Retry-After"] == "1"
    assert sandbox.stats.token_calls == 0
    await holder.release()
    assert (await client.get("/gfg/s1/v2/x")).status == 200
    assert sandbox.stats.token_calls == 1
