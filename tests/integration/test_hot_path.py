"""The request hot path: at most one store read, none while the token is cached."""

from __future__ import annotations

import asyncio

from aiohttp import web

from authproxy.models import TokenKey, TokenRecord
from authproxy.sandbox.oauth2 import OAuth2Sandbox
from authproxy.sandbox.sellercenter import SellerCenterSandbox
from authproxy.store.memory import MemoryStore
from tests.conftest import oauth2_app, settings_for, url_of


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
    settings = settings_for({"gfg": app}, **server)
    # the shops-by-status census reads every record too, first at a random moment: not now
    quiet = settings.keepalive.model_copy(update={"census_every": 1e9})
    client = await proxy_client(settings.model_copy(update={"keepalive": quiet}), store, clock)
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


def cookie_upstream() -> web.Application:
    """An upstream that sets a cookie on one path and echoes the cookies it receives."""

    async def set_cookie(request: web.Request) -> web.Response:
        shop_of_call = request.match_info["shop"]
        return web.json_response({}, headers={"Set-Cookie": f"session=of-{shop_of_call}; Path=/"})

    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"cookie": request.headers.get("Cookie", "")})

    app = web.Application()
    app.router.add_get("/set/{shop}", set_cookie)
    app.router.add_get("/echo", echo)
    return app


async def test_an_upstream_cookie_is_not_sent_on_another_shops_request(serve, proxy_client, clock):
    """The upstream session keeps no cookies: one shop's session cookie never reaches another's call
    (a hostname, not an IP: aiohttp's default cookie jar ignores cookies of IP addresses)."""
    sandbox = OAuth2Sandbox("cid", "csecret", clock=clock)
    tokens = url_of(await serve(sandbox.app()))
    upstream = url_of(await serve(cookie_upstream())).replace("127.0.0.1", "localhost")
    client = await proxy_client(
        settings_for({"crm": oauth2_app(tokens, base_url=upstream)}), MemoryStore(), clock
    )
    first = await client.get("/crm/shop-a/set/shop-a")
    assert first.status == 200 and "of-shop-a" in first.headers["Set-Cookie"]  # passed to its client
    for shop in ("shop-b", "shop-a"):
        reply = await client.get(f"/crm/{shop}/echo")
        assert reply.status == 200
        assert await reply.json() == {"cookie": ""}


def header_upstream() -> web.Application:
    """An upstream that echoes the request headers it received, and gzips when asked to."""

    async def echo(request: web.Request) -> web.Response:
        reply = web.json_response({k.lower(): v for k, v in request.headers.items()})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            reply.enable_compression()
        return reply

    app = web.Application()
    app.router.add_get("/headers", echo)
    return app


async def test_the_upstream_gets_the_clients_accept_headers_and_no_others(serve, proxy_client, clock):
    """A client that accepts no content coding must not get a gzipped reply: authproxy passes
    bodies through undecoded, so it never asks for a coding the client did not."""
    sandbox = OAuth2Sandbox("cid", "csecret", clock=clock)
    tokens = url_of(await serve(sandbox.app()))
    upstream = url_of(await serve(header_upstream()))
    client = await proxy_client(
        settings_for({"crm": oauth2_app(tokens, base_url=upstream)}), MemoryStore(), clock
    )
    plain = await client.get("/crm/shop-a/headers", skip_auto_headers=["Accept-Encoding", "Accept"])
    seen = await plain.json()
    assert plain.status == 200 and "Content-Encoding" not in plain.headers
    assert "accept-encoding" not in seen and "accept" not in seen, seen
    asked = await client.get("/crm/shop-a/headers", headers={"Accept-Encoding": "gzip", "Accept": "text/x"})
    assert asked.headers["Content-Encoding"] == "gzip", "passed on as the client asked"
    seen = await asked.json()
    assert (seen["accept-encoding"], seen["accept"]) == ("gzip", "text/x")


class ChunkedUpstream:
    """Replies without a Content-Length: one that comes whole, and one whose second half is
    held back until `go_on` is set."""

    def __init__(self) -> None:
        self.go_on = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/whole", self.whole)
        app.router.add_get("/held", self.held)
        return app

    async def whole(self, request: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse(headers={"Content-Type": "application/json"})
        reply.enable_chunked_encoding()
        await reply.prepare(request)
        await reply.write_eof(b'{"small": true}')
        return reply

    async def held(self, request: web.Request) -> web.StreamResponse:
        reply = web.StreamResponse()
        reply.enable_chunked_encoding()
        await reply.prepare(request)
        await reply.write(b"first half;")
        await self.go_on.wait()
        await reply.write_eof(b"second half")
        return reply


async def test_replies_without_a_length_come_whole_or_stream_as_they_arrive(serve, proxy_client, clock):
    sandbox = OAuth2Sandbox("cid", "csecret", clock=clock)
    tokens = url_of(await serve(sandbox.app()))
    upstream = ChunkedUpstream()
    base = url_of(await serve(upstream.app()))
    settings = settings_for({"crm": oauth2_app(tokens, base_url=base)})
    client = await proxy_client(settings, MemoryStore(), clock)

    whole = await client.get("/crm/acme/whole")
    assert (whole.status, await whole.read()) == (200, b'{"small": true}')
    assert whole.headers["Content-Type"] == "application/json"

    held = await client.get("/crm/acme/held")  # its head and first half pass before the rest exists
    assert held.status == 200
    first = await held.content.readexactly(len(b"first half;"))
    assert first == b"first half;" and not held.content.at_eof()
    upstream.go_on.set()
    assert await held.content.read() == b"second half"
