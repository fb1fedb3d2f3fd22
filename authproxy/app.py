"""create_app(settings): routes, typed state, start-up and clean-up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from authproxy.authorize import CALLBACK_PATH
from authproxy.callback import oauth_callback
from authproxy.clients import ClientGate
from authproxy.errors import StoreUnavailable
from authproxy.limiter import Limiter
from authproxy.metrics import Metrics
from authproxy.models import Clock, SystemClock
from authproxy.platforms import build_platform
from authproxy.proxy.handler import proxy
from authproxy.settings import Settings
from authproxy.state import STATE, State
from authproxy.store import TokenStore, open_store
from authproxy.tokens import TokenProvider

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def create_app(
    settings: Settings, *, clock: Clock | None = None, store: TokenStore | None = None
) -> web.Application:
    """The proxy as an aiohttp application. A passed-in store is not closed by it."""
    app = web.Application(handler_args={"max_field_size": 16384})

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        server = settings.server
        own_store = store is None
        token_store = store or open_store(server.store_url, server.key_prefix)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=server.upstream_connections, ttl_dns_cache=300),
            auto_decompress=False,
            trust_env=False,
        )
        the_clock = clock or SystemClock()
        metrics = Metrics(the_clock)
        tokens = TokenProvider(token_store, session, server, the_clock, metrics)
        app[STATE] = State(
            settings=settings,
            server=server,
            platforms={name: build_platform(cfg) for name, cfg in settings.apps.items()},
            store=token_store,
            session=session,
            tokens=tokens,
            clients=ClientGate(settings.clients),
            limiter=Limiter(token_store, server.slot_wait),
            metrics=metrics,
            clock=the_clock,
            upstream_timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=server.connect_timeout, sock_read=server.read_timeout
            ),
        )
        yield
        await tokens.drain()  # a refresh in flight may hold a rotated token: let it land
        await session.close()
        if own_store:
            await token_store.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/_authproxy/healthz", healthz)
    app.router.add_get("/_authproxy/readyz", readyz)
    app.router.add_get("/_authproxy/metrics", metrics_page)
    if settings.server.public_url:  # the OAuth callback: off unless reachable
        app.router.add_get(CALLBACK_PATH, oauth_callback)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[STATE].store.ping()
    except StoreUnavailable as exc:
        body = exc.body_bytes(app=None, shop=None, request_id="-")
        return web.Response(status=503, body=body, headers=exc.headers())
    return web.json_response({"status": "ready"})


async def metrics_page(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": PROMETHEUS_TEXT})
