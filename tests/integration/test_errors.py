"""Every documented error, headers both ways, client keys, and no secret in any log line."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from authproxy.sandbox.oauth2 import OAuth2Sandbox
from authproxy.sandbox.sellercenter import SellerCenterSandbox
from authproxy.store.redis import RedisStore
from tests.conftest import oauth2_app, settings_for, url_of
from tests.procs import free_port

SECRET = "gfg-app-secret-9f8e7d"


@pytest.fixture
async def gfg(serve, clock):
    sandbox = SellerCenterSandbox({"app-1": SECRET}, clock=clock)
    base = url_of(await serve(sandbox.app()))
    return sandbox, {
        "platform": "sellercenter",
        "base_url": base,
        "client_id": "app-1",
        "client_secret": SECRET,
    }


def assert_problem(reply: aiohttp.ClientResponse, body: dict, status: int, code: str) -> None:
    assert reply.status == status, body
    assert reply.headers["X-AuthProxy-Error"] == code
    assert reply.headers["Content-Type"] == "application/problem+json"
    assert body["code"] == code and body["status"] == status
    assert set(body) >= {"type", "title", "status", "detail", "code", "app", "shop", "request_id"}
    assert body["request_id"] == reply.headers["X-Request-Id"]


@pytest.mark.parametrize(
    "path",
    [
        "/gfg/s1/v2/../admin",
        "/gfg/s1/v2/%2e%2e/admin",
        "/gfg/s1/v2/%2E%2e/admin",
        "/gfg/s1/v2/%252e%252e/admin",
        "/gfg/s1/v2/..%2fadmin",
        "/gfg/s1/v2/a%5c..%5cb",
        "/gfg/s1/v2/a%00b",
        "/gfg/s1/./v2",
        "/gfg//v2/x",
        "/gfg",
    ],
)
async def test_bad_paths_are_refused(gfg, proxy_client, clock, path):
    sandbox, app = gfg
    client = await proxy_client(settings_for({"gfg": app}), _memory(), clock)
    # encoded=True: send the path as written, not as yarl would normalise it
    url = URL(str(client.server.make_url("")).rstrip("/") + path, encoded=True)
    reply = await client.session.get(url)
    assert_problem(reply, await reply.json(), 400, "bad_path")
    assert sandbox.stats.api_calls == 0


def _memory():
    from authproxy.store.memory import MemoryStore

    return MemoryStore()


async def test_unknown_app_and_reserved_names(gfg, proxy_client, clock):
    _, app = gfg
    client = await proxy_client(settings_for({"gfg": app}), _memory(), clock)
    for path in ("/nope/s1/x", "/_authproxy/s1/x", "/_other/s1/x"):
        reply = await client.get(path)
        assert_problem(reply, await reply.json(), 404, "unknown_app")


async def test_unknown_shop_when_shops_are_listed(gfg, proxy_client, clock):
    _, app = gfg
    app = {**app, "shops": {"known": {}}}
    client = await proxy_client(settings_for({"gfg": app}), _memory(), clock)
    reply = await client.get("/gfg/stranger/v2/x")
    assert_problem(reply, await reply.json(), 404, "unknown_shop")
    assert (await client.get("/gfg/known/v2/x")).status == 200


async def test_oversized_bodies_get_413(gfg, proxy_client, clock):
    _sandbox, app = gfg
    settings = settings_for({"gfg": app}, max_body=10_000, max_replay_body=1_000)
    client = await proxy_client(settings, _memory(), clock)
    reply = await client.post("/gfg/s1/v2/x", data=b"a" * 10_001)
    assert_problem(reply, await reply.json(), 413, "body_too_large")

    async def chunked():
        for _ in range(20):
            yield b"b" * 1000
            await asyncio.sleep(0)  # separate writes: the cap must hold mid-stream too

    reply = await client.post("/gfg/s1/v2/x", data=chunked())
    assert_problem(reply, await reply.json(), 413, "body_too_large")
    reply = await client.post("/gfg/s1/v2/x", data=b"c" * 9_000)  # streamed, under the cap
    assert reply.status == 200 and (await reply.json())["body_bytes"] == 9_000


async def test_upstream_down_and_upstream_timeout(serve, proxy_client, clock):
    sandbox = SellerCenterSandbox({"app-1": SECRET}, clock=clock)
    base = url_of(await serve(sandbox.app()))
    dead = f"http://127.0.0.1:{free_port()}"
    apps = {
        "down": {
            "platform": "sellercenter",
            "base_url": dead,
            "auth_url": base,
            "client_id": "app-1",
            "client_secret": SECRET,
        },
        "slow": {"platform": "sellercenter", "base_url": base, "client_id": "app-1", "client_secret": SECRET},
    }
    client = await proxy_client(settings_for(apps, read_timeout=0.2), _memory(), clock)
    reply = await client.get("/down/s1/v2/x")
    assert_problem(reply, await reply.json(), 502, "upstream_unreachable")
    reply = await client.get("/slow/s1/v2/slow?seconds=2")
    assert_problem(reply, await reply.json(), 504, "upstream_timeout")


async def test_token_endpoint_down_hanging_or_refusing(gfg, proxy_client, clock, logs):
    sandbox, app = gfg
    settings = settings_for({"gfg": app}, token_timeout=0.2, lock_ttl=1)
    client = await proxy_client(settings, _memory(), clock)
    sandbox.knobs.token_status = 500
    reply = await client.get("/gfg/a/v2/x")
    assert_problem(reply, await reply.json(), 502, "refresh_failed")
    assert "Retry-After" in reply.headers
    sandbox.knobs.token_status = None
    sandbox.knobs.token_hang = True
    reply = await client.get("/gfg/b/v2/x")
    assert_problem(reply, await reply.json(), 502, "refresh_failed")
    sandbox.knobs.token_hang = False
    sandbox.hang.set()
    sandbox.knobs.token_status = 401  # invalid_client: the credentials are wrong
    reply = await client.get("/gfg/c/v2/x")
    body = await reply.json()
    assert reply.status in (401, 502), body
    assert SECRET not in logs.text() and SECRET not in str(body)


async def test_invalid_grant_answers_needs_reauthorization(serve, proxy_client, clock):
    sandbox = OAuth2Sandbox("cid", "csecret", clock=clock)
    base = url_of(await serve(sandbox.app()))
    app = oauth2_app(base, "never-issued")
    client = await proxy_client(settings_for({"crm": app}), _memory(), clock)
    reply = await client.get("/crm/acme/api/x")
    assert_problem(reply, await reply.json(), 401, "needs_reauthorization")
    reply = await client.get("/crm/acme/api/x")
    assert_problem(reply, await reply.json(), 401, "needs_reauthorization")
    assert sandbox.stats.token_calls == 1
    reply = await client.get("/crm/stranger/api/x")
    assert_problem(reply, await reply.json(), 404, "unknown_shop")


async def test_store_down_answers_store_unavailable_and_readyz_503(gfg, proxy_client, clock):
    _, app = gfg
    store = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", "down")
    client = await proxy_client(settings_for({"gfg": app}), store, clock)
    reply = await client.get("/gfg/s1/v2/x")
    assert_problem(reply, await reply.json(), 503, "store_unavailable")
    assert (await client.get("/_authproxy/readyz")).status == 503
    assert (await client.get("/_authproxy/healthz")).status == 200
    await store.close()


async def test_headers_both_ways(serve, proxy_client, clock):
    seen = CIMultiDict()

    async def upstream(request: web.Request) -> web.Response:
        seen.update(request.headers)
        return web.Response(
            text="ok",
            headers={
                "Connection": "close, X-Hop",
                "X-Hop": "1",
                "Keep-Alive": "timeout=5",
                "X-Kept": "yes",
                "X-Request-Id": "platform-7",
            },
        )

    api = web.Application()
    api.router.add_route("*", "/{tail:.*}", upstream)
    api_base = url_of(await serve(api))
    sandbox = OAuth2Sandbox("cid", "csecret", clock=clock)
    token_base = url_of(await serve(sandbox.app()))
    app = {
        "platform": "oauth2",
        "base_url": api_base,
        "token_url": token_base + "/oauth/token",
        "client_id": "cid",
        "client_secret": "csecret",
        "header": "X-Api-Token",
        "header_format": "{token}",
    }
    client = await proxy_client(settings_for({"crm": app}), _memory(), clock)
    reply = await client.get(
        "/crm/acme/x",
        headers={
            "Authorization": "Bearer from-client",
            "X-Api-Token": "from-client",
            "Cookie": "session=1",
            "Connection": "X-Drop-Me",
            "X-Drop-Me": "1",
            "Proxy-Authorization": "Basic x",
            "X-Request-Id": "req-123",
            "X-Custom": "kept",
        },
    )
    assert reply.status == 200
    assert seen["X-Api-Token"].startswith("oa-")
    for gone in ("Authorization", "Cookie", "X-Drop-Me", "Proxy-Authorization"):
        assert gone not in seen
    assert seen["X-Custom"] == "kept" and seen["X-Request-Id"] == "req-123"
    assert reply.headers["X-Request-Id"] == "req-123"
    assert reply.headers["X-Upstream-Request-Id"] == "platform-7"
    assert reply.headers["X-Kept"] == "yes"
    assert "X-Hop" not in reply.headers and "Keep-Alive" not in reply.headers


async def test_query_is_forwarded_byte_for_byte(gfg, proxy_client, clock):
    _, app = gfg
    client = await proxy_client(settings_for({"gfg": app}), _memory(), clock)
    raw = "b=2&a=1&a=0&sp=%20+x&u=%C3%A9&empty=&flag&t=a%2Fb"
    base = str(client.server.make_url("")).rstrip("/")
    reply = await client.session.get(URL(f"{base}/gfg/s1/v2/x?{raw}", encoded=True))
    assert (await reply.json())["query"] == raw


async def test_client_keys_guard_apps_and_shops(gfg, proxy_client, clock):
    from authproxy.settings import Settings

    _, app = gfg
    settings = Settings(
        server={"store_url": "memory://"},
        apps={"gfg": app},
        clients={"shop-app": {"key": "k-123456789", "apps": ["gfg"], "shops": ["s1"]}},
    )
    client = await proxy_client(settings, _memory(), clock)
    reply = await client.get("/gfg/s1/v2/x")
    assert_problem(reply, await reply.json(), 401, "unauthorized_client")
    reply = await client.get("/gfg/s1/v2/x", headers={"X-AuthProxy-Key": "wrong"})
    assert_problem(reply, await reply.json(), 401, "unauthorized_client")
    reply = await client.get("/gfg/s2/v2/x", headers={"X-AuthProxy-Key": "k-123456789"})
    assert_problem(reply, await reply.json(), 401, "unauthorized_client")
    reply = await client.get("/gfg/s1/v2/x", headers={"X-AuthProxy-Key": "k-123456789"})
    assert reply.status == 200
    assert "x-authproxy-key" not in (await reply.json())["headers"]


async def test_client_going_away_does_not_cancel_the_refresh(gfg, proxy_client, clock):
    sandbox, app = gfg
    client = await proxy_client(settings_for({"gfg": app}), _memory(), clock)
    sandbox.knobs.token_hang = True
    request = asyncio.ensure_future(client.get("/gfg/s1/v2/x"))
    while sandbox.stats.token_calls == 0:
        await asyncio.sleep(0)  # yield until the refresh reached the token endpoint
    request.cancel()
    sandbox.knobs.token_hang = False
    sandbox.hang.set()
    reply = await client.get("/gfg/s1/v2/x")
    assert reply.status == 200
    assert sandbox.stats.token_calls == 1


async def test_a_bug_is_answered_as_problem_json_and_logged_without_secrets(gfg, proxy_client, clock, logs):
    import dataclasses

    from authproxy.platforms.sellercenter import SellerCenter
    from authproxy.runtime import RUNTIME

    sandbox, app = gfg

    class Broken(SellerCenter):
        def apply_auth(self, shop, request, token, now):
            raise RuntimeError(f"boom with {token.access_token}")

    client = await proxy_client(settings_for({"gfg": app}), _memory(), clock)
    runtime = client.server.app[RUNTIME]
    gfg_app = runtime.apps["gfg"]
    runtime.apps["gfg"] = dataclasses.replace(gfg_app, platform=Broken(gfg_app.settings))
    reply = await client.get("/gfg/s1/v2/x")
    assert_problem(reply, await reply.json(), 500, "internal_error")
    assert "unexpected RuntimeError" in logs.text()
    assert sandbox.book.access  # a token was issued, and its value is in the message only
    assert not any(token in logs.text() for token in sandbox.book.access)
