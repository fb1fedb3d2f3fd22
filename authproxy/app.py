"""create_app(settings): routes, the runtime, start-up and clean-up."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from authproxy.authorize import CALLBACK_PATH
from authproxy.callback import oauth_callback
from authproxy.errors import StoreUnavailable
from authproxy.http_server import FRONT_DOOR, Handler, handler_options
from authproxy.memory import trimming
from authproxy.models import Clock
from authproxy.platforms.amazon import TOKEN_PATH
from authproxy.proxy.handler import access_log, proxy
from authproxy.proxy.lwa import ROUTE as LWA_ROUTE
from authproxy.proxy.lwa import lwa_token
from authproxy.runtime import RUNTIME, open_runtime
from authproxy.settings import Settings
from authproxy.store import TokenStore

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
OWN_PREFIX = "/_authproxy/"  # authproxy's own endpoints
#: request targets the route table may route elsewhere than to the proxy (see _front_door): not
#: starting with "/", or with OWN_PREFIX, or a path (before any "?") holding "%" or TOKEN_PATH
FOR_THE_TABLE = re.compile(rf"[^/]|{re.escape(OWN_PREFIX)}|[^?]*(?:%|{re.escape(TOKEN_PATH)})")


def create_app(
    settings: Settings, *, clock: Clock | None = None, store: TokenStore | None = None
) -> web.Application:
    """The proxy as an aiohttp application. A passed-in store is not closed by it."""
    app = web.Application(handler_args=handler_options(settings.server))

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        async with open_runtime(settings, clock=clock, store=store) as runtime:
            app[RUNTIME] = runtime
            await runtime.event_delivery.start()
            await runtime.keepalive.start()
            await runtime.census.start()
            try:
                yield
            finally:
                await runtime.census.stop()
                await runtime.keepalive.stop()  # its refreshes under way finish first
                await runtime.drain()  # a refresh's outcome may be an event: drain before delivery stops
                await runtime.event_delivery.stop()

    app.cleanup_ctx.append(access_log_flushed)  # first in, last out: after the others, even failed
    app.cleanup_ctx.append(lifecycle)
    app.cleanup_ctx.append(trimming)
    app.router.add_get(OWN_PREFIX + "healthz", healthz)
    app.router.add_get(OWN_PREFIX + "readyz", readyz)
    app.router.add_get(OWN_PREFIX + "metrics", metrics_page)
    if settings.server.public_url:  # the OAuth callback: off unless reachable
        app.router.add_get(CALLBACK_PATH, oauth_callback)
    app.router.add_post(LWA_ROUTE, lwa_token)  # Amazon apps' LWA calls: a placeholder, never forwarded
    app.router.add_route("*", "/{tail:.*}", proxy_routed)
    app[FRONT_DOOR] = _front_door(app)  # proxied requests skip the table: no middleware, no signal
    return app


def _front_door(app: web.Application) -> Callable[[Handler], Handler]:
    """The server's handler: a request for the proxy goes to it at once, since walking the route
    table (an index lookup per path segment, a regex, a match dict) would only lead to its
    catch-all. What the table might route elsewhere, or treat otherwise, goes through it:
    /_authproxy/..., Amazon's LWA token path, any percent-encoded path (the table matches
    decoded paths), a target not starting with "/", an Expect header (100-continue), CONNECT.
    On the direct way there is no match info: request.app, middlewares and on_response_prepare
    signals are not there for proxied requests (authproxy registers none)."""

    def wrap(table: Handler) -> Handler:
        runtime = app[RUNTIME]  # made as the app started, before the server

        def front_door(request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
            if (
                FOR_THE_TABLE.match(request.raw_path)
                or "Expect" in request.headers
                or request.method == "CONNECT"  # its target is an authority: the table refuses it
            ):
                return table(request)
            return proxy(request, runtime)

        return front_door

    return wrap


async def proxy_routed(request: web.Request) -> web.StreamResponse:
    return await proxy(request, request.app[RUNTIME])


async def access_log_flushed(app: web.Application) -> AsyncIterator[None]:
    """The request lines still waiting for their write go out as the server stops."""
    yield
    access_log.flush()


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await request.app[RUNTIME].store.ping()
    except StoreUnavailable as exc:
        body = exc.body_bytes(app=None, shop=None, request_id="-")
        return web.Response(status=503, body=body, headers=exc.headers())
    return web.json_response({"status": "ready"})


async def metrics_page(request: web.Request) -> web.Response:
    body = request.app[RUNTIME].metrics.render()
    return web.Response(body=body, headers={"Content-Type": PROMETHEUS_TEXT})
