"""The proxy handler: read, authenticate, forward, classify, replay once, stream back."""

from __future__ import annotations

import asyncio
import logging
import re
import traceback
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from yarl import URL

from authproxy.errors import (
    BodyTooLarge,
    ProxyError,
    UnknownApp,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from authproxy.models import HttpReply, OutgoingRequest, Token, TokenKey, Verdict
from authproxy.platforms import Platform
from authproxy.proxy.headers import request_headers, response_headers
from authproxy.proxy.routing import drop_params, join_url, parse_route
from authproxy.redact import redact_query
from authproxy.state import STATE, State
from authproxy.tokens import refreshed_here

access_log = logging.getLogger("authproxy.access")
log = logging.getLogger("authproxy.proxy")
CHUNK = 64 * 1024
INSPECT_LIMIT = 64 * 1024
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


@dataclass
class Exchange:
    """What one client request did, for its log line and metrics."""

    request_id: str
    method: str
    target: str
    app: str | None = None
    shop: str | None = None
    status: int = 0
    upstream_ms: float | None = None
    refreshed: bool = False
    replayed: bool = False
    error: str | None = None


@dataclass
class Upstream:
    """An upstream reply whose head was read, and maybe classified."""

    response: aiohttp.ClientResponse
    head: bytes = b""
    verdict: Verdict = Verdict.OK


@dataclass
class StreamedBody:
    """A request body too large to buffer: forwarded as it arrives, capped at `limit`."""

    prefix: bytes
    source: aiohttp.StreamReader
    limit: int
    length: int | None  # the client's Content-Length, forwarded as is
    sent: int = 0
    too_large: bool = field(default=False)

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self._counted(self.prefix)
        async for chunk in self.source.iter_chunked(CHUNK):
            yield self._counted(chunk)

    def _counted(self, chunk: bytes) -> bytes:
        self.sent += len(chunk)
        if self.sent > self.limit:
            self.too_large = True
            raise BodyTooLarge(f"the request body exceeds {self.limit} bytes (server.max_body)")
        return chunk


async def proxy(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    incoming_id = request.headers.get("X-Request-Id", "")
    exchange = Exchange(
        request_id=incoming_id if REQUEST_ID.match(incoming_id) else uuid.uuid4().hex,
        method=request.method,
        target=request.raw_path,
    )
    try:
        response = await _handle(request, state, exchange)
    except ProxyError as exc:
        exchange.error = exc.code
        log.debug("%s: %s", exc.code, exc.detail)
        response = _problem(exc, exchange)
    except Exception as exc:  # a bug: answer it like any error, log where it happened
        # the frames, not the message: a library's message may quote a URL with a token in it
        frames = "".join(traceback.format_tb(exc.__traceback__))
        log.error("unexpected %s in request %s\n%s", type(exc).__name__, exchange.request_id, frames)
        exchange.error = "internal_error"
        response = _problem(
            ProxyError("authproxy failed unexpectedly; the log names the request id"), exchange
        )
    exchange.status = response.status
    # only configured apps become label values: a client must not grow the label set
    known_app = exchange.app if exchange.app in state.platforms else None
    state.metrics.request(known_app or "-", response.status)
    _log_exchange(exchange)
    return response


async def _handle(request: web.Request, state: State, exchange: Exchange) -> web.StreamResponse:
    route = parse_route(request.raw_path)
    exchange.app, exchange.shop = route.app, route.shop
    exchange.target = route.path + ("?" + route.query if route.query else "")
    platform = state.platforms.get(route.app)
    if platform is None:
        raise UnknownApp(f"no app named {route.app!r} is configured")
    state.clients.check(request.headers.get("X-AuthProxy-Key"), route.app, route.shop)
    body = await _read_body(request, state)
    outgoing = OutgoingRequest(
        method=request.method,
        path=route.path,
        query=drop_params(route.query, platform.owned_query),
        headers=(
            *request_headers(request.headers.items(), platform.credential_headers),
            ("X-Request-Id", exchange.request_id),  # so the upstream's logs can be matched up
        ),
        body=body if isinstance(body, bytes) else None,
        streamed=isinstance(body, StreamedBody),
    )
    if outgoing.streamed and platform.needs_buffered_body(outgoing):
        raise BodyTooLarge(
            f"{platform.name} signs the request body: bodies over "
            f"{state.server.max_replay_body} bytes (server.max_replay_body) cannot be sent"
        )
    stream = body if isinstance(body, StreamedBody) else None
    key = TokenKey(route.app, route.shop)
    async with state.limiter.slot(key, platform.concurrency_limit):
        upstream = await _forward_with_replay(state, platform, key, outgoing, stream, exchange)
        return await _stream_back(request, upstream, exchange)


async def _forward_with_replay(
    state: State,
    platform: Platform,
    key: TokenKey,
    outgoing: OutgoingRequest,
    stream: StreamedBody | None,
    exchange: Exchange,
) -> Upstream:
    token = await state.tokens.current(key, platform)
    exchange.refreshed = refreshed_here.get()
    upstream = await _send(state, platform, key, outgoing, stream, token, exchange)
    if upstream.verdict is not Verdict.TOKEN_INVALID or outgoing.streamed:
        return upstream
    upstream.response.release()
    token = await state.tokens.after_rejection(key, platform, token)
    exchange.refreshed = exchange.replayed = True
    state.metrics.replay(key.app)
    return await _send(state, platform, key, outgoing, None, token, exchange)


async def _send(
    state: State,
    platform: Platform,
    key: TokenKey,
    outgoing: OutgoingRequest,
    stream: StreamedBody | None,
    token: Token,
    exchange: Exchange,
) -> Upstream:
    loop = asyncio.get_running_loop()
    signed = platform.apply_auth(key.shop, outgoing, token, state.clock.now())
    url = URL(join_url(platform.base_url, signed.path, signed.query), encoded=True)
    headers = list(signed.headers)
    if stream is not None and stream.length is not None:
        headers.append(("Content-Length", str(stream.length)))
    started = loop.time()
    try:
        response = await state.session.request(
            signed.method,
            url,
            headers=headers,
            data=stream.chunks() if stream is not None else (signed.body or None),
            allow_redirects=False,
            timeout=state.upstream_timeout,
        )
    except BodyTooLarge:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamTimeout(f"{platform.base_url} did not answer in time") from None
    except aiohttp.ClientError as exc:
        if stream is not None and stream.too_large:
            raise BodyTooLarge(f"the request body exceeds {stream.limit} bytes") from None
        raise UpstreamUnreachable(f"{platform.base_url} is unreachable ({type(exc).__name__})") from None
    exchange.upstream_ms = (loop.time() - started) * 1000
    state.metrics.upstream(key.app, loop.time() - started)
    return await _inspect(platform, response)


async def _inspect(platform: Platform, response: aiohttp.ClientResponse) -> Upstream:
    """Read up to 64 KiB of a reply the platform wants to classify."""
    upstream = Upstream(response)
    if not platform.should_inspect(response.status, response.headers):
        return upstream
    head = bytearray()
    try:
        while len(head) <= INSPECT_LIMIT:
            chunk = await response.content.readany()
            if not chunk:
                break
            head += chunk
    except (TimeoutError, aiohttp.ClientError):
        response.release()
        raise UpstreamTimeout("the upstream stopped sending its reply") from None
    upstream.head = bytes(head)
    if response.content.at_eof() and len(head) <= INSPECT_LIMIT:
        reply = HttpReply(response.status, response.headers, upstream.head)
        upstream.verdict = platform.classify(reply)
    return upstream


async def _stream_back(request: web.Request, upstream: Upstream, exchange: Exchange) -> web.StreamResponse:
    response = upstream.response
    out = web.StreamResponse(status=response.status, reason=response.reason)
    for name, value in response_headers(response.headers.items()):
        # the platform's own request id (Shoptet, Amazon...) stays readable beside ours
        out.headers.add("X-Upstream-Request-Id" if name.lower() == "x-request-id" else name, value)
    out.headers["X-Request-Id"] = exchange.request_id
    if exchange.replayed:
        out.headers["X-AuthProxy-Retried"] = "1"
    try:
        await out.prepare(request)
        if upstream.head:
            await out.write(upstream.head)
        async for chunk in response.content.iter_chunked(CHUNK):
            await out.write(chunk)
        await out.write_eof()
    except ConnectionResetError:  # the client went away: nothing is wrong upstream
        exchange.error = "client_gone"
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("upstream stream of %s broke off: %s", exchange.request_id, type(exc).__name__)
        exchange.error = "upstream_aborted"
        if request.transport is not None:
            request.transport.close()  # a truncated body must not look complete
    finally:
        response.release()
    return out


async def _read_body(request: web.Request, state: State) -> bytes | StreamedBody:
    """The body buffered when it fits `max_replay_body`, else streamed (capped)."""
    limit, cap = state.server.max_replay_body, state.server.max_body
    length = request.content_length
    if length is not None and length > cap:
        raise BodyTooLarge(f"the request body ({length} bytes) exceeds {cap} bytes (server.max_body)")
    if not request.body_exists:
        return b""
    buffered = bytearray()
    while len(buffered) <= limit:
        chunk = await request.content.readany()
        if not chunk:
            return bytes(buffered)
        buffered += chunk
    if len(buffered) > cap:
        raise BodyTooLarge(f"the request body exceeds {cap} bytes (server.max_body)")
    return StreamedBody(bytes(buffered), request.content, cap, length)


def _problem(exc: ProxyError, exchange: Exchange) -> web.Response:
    body = exc.body_bytes(app=exchange.app, shop=exchange.shop, request_id=exchange.request_id)
    headers = exc.headers()
    headers["X-Request-Id"] = exchange.request_id
    return web.Response(status=exc.status, body=body, headers=headers)


def _log_exchange(exchange: Exchange) -> None:
    path, _, query = exchange.target.partition("?")
    fields = {
        "request_id": exchange.request_id,
        "app": exchange.app,
        "shop": exchange.shop,
        "method": exchange.method,
        "path": path + ("?" + redact_query(query) if query else ""),
        "status": exchange.status,
        "upstream_ms": round(exchange.upstream_ms, 1) if exchange.upstream_ms is not None else None,
        "refreshed": exchange.refreshed,
        "replayed": exchange.replayed,
    }
    if exchange.error:
        fields["error"] = exchange.error
    access_log.info("%(method)s %(path)s -> %(status)s", fields, extra={"fields": fields})
