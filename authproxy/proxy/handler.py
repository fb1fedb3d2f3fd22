"""The proxy handler: aiohttp I/O only.

Read the body, drive the auth flow (flow.py) by sending what it yields and
handing back each reply's head, stream the answer back, log one line.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import secrets
import time
import traceback
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from authproxy.errors import (
    BodyTooLarge,
    ProxyError,
    SecretUndecryptable,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from authproxy.limits.shaper import UNSHAPED, Outcome, Ticket
from authproxy.logs import AccessLog
from authproxy.models import INSPECT_LIMIT, HttpReply, OutgoingRequest, TokenKey
from authproxy.platforms import SECRET_QUERY
from authproxy.proxy.body import StreamedBody, read_body
from authproxy.proxy.flow import replay_once
from authproxy.proxy.headers import request_headers, response_headers
from authproxy.proxy.routing import join_url, parse_route
from authproxy.query import drop_params, redact_query
from authproxy.runtime import AppRuntime, Runtime
from authproxy.tokens.provider import refreshed_here

access_log = AccessLog()
log = logging.getLogger("authproxy.proxy")
CHUNK = 64 * 1024
#: replies with a Content-Length up to this (or without one, when they have come whole and
#: are no longer) are read whole and answered in one write
SMALL_REPLY = 64 * 1024
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
#: request ids made here: 64 random bits per process, then a counter (32 hex digits in all,
#: unique across replicas and restarts without a random draw per request)
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count()


def request_id_for(request: web.BaseRequest) -> str:
    """The client's X-Request-Id when it is a sane one, else a new id."""
    incoming = request.headers.get("X-Request-Id", "")
    if incoming and REQUEST_ID.fullmatch(incoming):
        return incoming
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


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
    ticket: Ticket | None = None  # its rate-limit allowance

    def allowance(self) -> Ticket:
        if self.ticket is None:
            raise RuntimeError("the request has no rate-limit ticket")
        return self.ticket


@dataclass
class Upstream:
    """An upstream reply whose head was read when the platform classifies it."""

    response: aiohttp.ClientResponse
    head: bytes = b""
    reply: HttpReply | None = None  # the classifiable head (None: not inspected or too long)
    outcome: Outcome = UNSHAPED  # what it said about the rate limits


async def proxy(request: web.BaseRequest, runtime: Runtime) -> web.StreamResponse:
    exchange = Exchange(
        request_id=request_id_for(request),
        method=request.method,
        target=request.raw_path,
    )
    try:
        response = await _handle(request, runtime, exchange)
    except SecretUndecryptable as exc:  # never another shop's token: an error, counted and logged
        exchange.error = exc.code
        runtime.metrics.decrypt_failure(exchange.app or "-", exc.reason)  # read for a configured app only
        log.error("%s: %s", exc.code, exc.detail)
        response = _problem(exc, exchange, runtime)
    except ProxyError as exc:
        exchange.error = exc.code
        log.debug("%s: %s", exc.code, exc.detail)
        response = _problem(exc, exchange, runtime)
    except Exception as exc:  # a bug: answer it like any error, log where it happened
        # the frames, not the message: a library's message may quote a URL with a token in it
        frames = "".join(traceback.format_tb(exc.__traceback__))
        log.error("unexpected %s in request %s\n%s", type(exc).__name__, exchange.request_id, frames)
        exchange.error = "internal_error"
        response = _problem(
            ProxyError("authproxy failed unexpectedly; the log names the request id"), exchange, runtime
        )
    exchange.status = response.status
    # only configured apps become label values: a client must not grow the label set
    known_app = exchange.app if exchange.app in runtime.apps else None
    runtime.metrics.request(known_app or "-", response.status)
    _log_exchange(exchange)
    return response


async def _handle(request: web.BaseRequest, runtime: Runtime, exchange: Exchange) -> web.StreamResponse:
    route = parse_route(request.raw_path)
    exchange.app, exchange.shop = route.app, route.shop
    exchange.target = route.path + ("?" + route.query if route.query else "")
    app = runtime.app(route.app)
    runtime.clients.check(request.headers.get("X-AuthProxy-Key"), route.app, route.shop)
    platform = app.platform
    body = await read_body(request, runtime.server)
    outgoing = OutgoingRequest(
        method=request.method,
        path=route.path,
        query=drop_params(route.query, platform.owned_query),
        headers=(
            *request_headers(request.headers, platform.credential_headers),
            ("X-Request-Id", exchange.request_id),  # so the upstream's logs can be matched up
        ),
        body=body if isinstance(body, bytes) else None,
        streamed=isinstance(body, StreamedBody),
    )
    if outgoing.streamed and platform.needs_buffered_body(outgoing):
        raise BodyTooLarge(
            f"{platform.name} signs the request body: bodies over "
            f"{runtime.server.max_replay_body} bytes (server.max_replay_body) cannot be sent"
        )
    stream = body if isinstance(body, StreamedBody) else None
    exchange.ticket = runtime.shaper.ticket(request.headers)
    key = app.tokens.key(route.shop)
    if platform.concurrency_limit is None:  # no call slot to take (most platforms)
        return await _answer(request, await _forward(runtime, app, key, outgoing, stream, exchange), exchange)
    async with runtime.slots.slot(key, platform.concurrency_limit):
        upstream = await _forward(runtime, app, key, outgoing, stream, exchange)
        return await _answer(request, upstream, exchange)


async def _forward(
    runtime: Runtime,
    app: AppRuntime,
    key: TokenKey,
    outgoing: OutgoingRequest,
    stream: StreamedBody | None,
    exchange: Exchange,
) -> Upstream:
    """Drive the auth flow: send what it yields until it is done with a reply."""
    flow = replay_once(
        app.platform, app.tokens, runtime.clock, key.shop, outgoing, replayable=not outgoing.streamed
    )
    signed = await anext(flow)
    exchange.refreshed = refreshed_here.get()
    while True:
        upstream = await _send(runtime, app, key, signed, stream, exchange)
        if runtime.shaper.retry(upstream.outcome, exchange.allowance(), replayable=not outgoing.streamed):
            upstream.response.release()  # refused at the platform's gate: safe to send once more
            exchange.replayed = True
            upstream = await _send(runtime, app, key, signed, None, exchange)
        try:
            signed = await flow.asend(upstream.reply)
        except StopAsyncIteration:
            return upstream
        upstream.response.release()
        exchange.refreshed = exchange.replayed = True
        runtime.metrics.replay(app.name)
        stream = None


async def _send(
    runtime: Runtime,
    app: AppRuntime,
    key: TokenKey,
    signed: OutgoingRequest,
    stream: StreamedBody | None,
    exchange: Exchange,
) -> Upstream:
    admission = await runtime.shaper.admit(key, app.platform, signed, exchange.allowance())
    url = URL(join_url(app.base_url, signed.path, signed.query), encoded=True)
    headers = list(signed.headers)
    if stream is not None and stream.length is not None:
        headers.append(("Content-Length", str(stream.length)))
    started = time.perf_counter()  # not the loop's clock: uvloop's counts whole milliseconds
    try:
        response = await runtime.session.request(
            signed.method,
            url,
            headers=headers,
            data=stream.chunks() if stream is not None else (signed.body or None),
            allow_redirects=False,
            timeout=runtime.upstream_timeout,
        )
    except ProxyError:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise UpstreamTimeout(f"{app.base_url} did not answer in time") from None
    except aiohttp.ClientError as exc:
        if stream is not None and stream.failure is not None:
            raise stream.failure from None  # the client's body, not the upstream, failed
        raise UpstreamUnreachable(f"{app.base_url} is unreachable ({type(exc).__name__})") from None
    elapsed = time.perf_counter() - started
    exchange.upstream_ms = elapsed * 1000
    runtime.metrics.upstream(app.name, elapsed)
    upstream = Upstream(response)
    if app.platform.should_inspect(response.status, response.headers):
        await _inspect(upstream)
    reply = upstream.reply or HttpReply(response.status, response.headers, b"")
    upstream.outcome = await runtime.shaper.learn(admission, app.platform, reply)
    return upstream


async def _inspect(upstream: Upstream) -> None:
    """Read up to INSPECT_LIMIT bytes of a reply the platform wants to classify."""
    response = upstream.response
    content = response.content
    head = bytearray()
    try:
        while len(head) <= INSPECT_LIMIT and not content.at_eof():  # as in _whole
            head += await content.readany()
    except (TimeoutError, aiohttp.ClientError):
        response.close()
        raise UpstreamTimeout("the upstream stopped sending its reply") from None
    upstream.head = bytes(head)
    if content.at_eof() and len(head) <= INSPECT_LIMIT:
        upstream.reply = HttpReply.received(response.status, response.headers, upstream.head)


async def _answer(request: web.BaseRequest, upstream: Upstream, exchange: Exchange) -> web.StreamResponse:
    """The upstream's reply, passed on: read whole and written at once when its length is
    known and small, else streamed chunk by chunk (memory stays bounded either way)."""
    response = upstream.response
    headers = response_headers(response.headers)
    headers.append(("X-Request-Id", exchange.request_id))
    if exchange.replayed:
        headers.append(("X-AuthProxy-Retried", "1"))
    if (seconds := upstream.outcome.retry_after) is not None:  # a throttled reply: in seconds,
        headers = [(k, v) for k, v in headers if k.lower() != "retry-after"]  # whatever it said
        headers.append(("Retry-After", str(seconds)))
    try:
        length = response.content_length
        # a small known length, or no length but the whole reply is here already (a chunked
        # reply that came in one piece): nothing to wait for that a stream would show sooner
        if (length is not None and length <= SMALL_REPLY) or (length is None and response.content.is_eof()):
            return await _whole(request, response, upstream.head, headers, exchange)
        return await _streamed(request, response, upstream.head, headers, exchange)
    finally:
        _let_go(response)


async def _whole(
    request: web.BaseRequest,
    response: aiohttp.ClientResponse,
    head: bytes,
    headers: list[tuple[str, str]],
    exchange: Exchange,
) -> web.StreamResponse:
    """A reply of at most SMALL_REPLY bytes, or one that has come whole: one write to the client
    (larger than SMALL_REPLY after all: streamed on from what was read)."""
    content = response.content
    body = bytearray(head)
    try:
        while len(body) <= SMALL_REPLY and not content.at_eof():  # no read to learn of the end
            body += await content.readany()
    except (aiohttp.ClientError, TimeoutError):  # broke off: passed on as a stream that broke off
        return await _streamed(request, response, bytes(body), headers, exchange)
    if not content.at_eof():
        return await _streamed(request, response, bytes(body), headers, exchange)
    out = web.Response(status=response.status, reason=response.reason, headers=headers, body=bytes(body))
    try:
        await out.prepare(request)
        await out.write_eof()
    except (ConnectionError, aiohttp.ClientError, TimeoutError):
        exchange.error = "client_gone"  # nothing else writes to the client here
    return out


async def _streamed(
    request: web.BaseRequest,
    response: aiohttp.ClientResponse,
    head: bytes,
    headers: list[tuple[str, str]],
    exchange: Exchange,
) -> web.StreamResponse:
    out = web.StreamResponse(status=response.status, reason=response.reason, headers=headers)
    try:
        await out.prepare(request)
        if head:
            await out.write(head)
        async for chunk in response.content.iter_chunked(CHUNK):
            await out.write(chunk)
        await out.write_eof()
    except (ConnectionError, aiohttp.ClientError, TimeoutError) as exc:
        client = request.transport
        if client is None or client.is_closing():  # reset, or gone while a write waited
            exchange.error = "client_gone"
        else:
            log.warning("upstream stream of %s broke off: %s", exchange.request_id, type(exc).__name__)
            exchange.error = "upstream_aborted"
            client.close()  # a truncated body must not look complete
    return out


def _let_go(response: aiohttp.ClientResponse) -> None:
    """Pool the upstream connection only after a whole reply; close it after a partial one,
    dropping whatever it still buffers rather than reading the rest of a large body."""
    if response.content.at_eof():
        response.release()
    else:
        response.close()


def _problem(exc: ProxyError, exchange: Exchange, runtime: Runtime) -> web.Response:
    app = runtime.apps.get(exchange.app or "")
    dialect = app.platform.error_members if app is not None else None  # the platform's error shape too
    body = exc.body_bytes(
        app=exchange.app, shop=exchange.shop, request_id=exchange.request_id, dialect=dialect
    )
    headers = exc.headers()
    headers["X-Request-Id"] = exchange.request_id
    return web.Response(status=exc.status, body=body, headers=headers)


def _log_exchange(exchange: Exchange) -> None:
    path, _, query = exchange.target.partition("?")
    fields: dict[str, Any] = {
        "request_id": exchange.request_id,
        "app": exchange.app,
        "shop": exchange.shop,
        "method": exchange.method,
        "path": path + ("?" + redact_query(query, SECRET_QUERY) if query else ""),
        "status": exchange.status,
        "upstream_ms": _tenths(exchange.upstream_ms) if exchange.upstream_ms is not None else None,
        "refreshed": exchange.refreshed,
        "replayed": exchange.replayed,
    }
    if exchange.ticket is not None and exchange.ticket.waited > 0:
        fields["waited_ms"] = _tenths(exchange.ticket.waited * 1000)
    if exchange.error:
        fields["error"] = exchange.error
    access_log.write(fields)


def _tenths(milliseconds: float) -> float:
    """Rounded to a tenth, halves up (round(x, 1) formats and parses a decimal string)."""
    return math.floor(milliseconds * 10 + 0.5) / 10 if math.isfinite(milliseconds) else milliseconds
