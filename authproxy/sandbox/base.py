"""What every sandbox shares: token books, counters, knobs and control routes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from authproxy.models import Clock, SystemClock
from authproxy.sandbox.limits import Arrivals

CHUNK = b"x" * 65536


@dataclass
class Knobs:
    """How the sandbox misbehaves: set by tests or POST /_sandbox/knobs."""

    token_status: int | None = None  # answer the token endpoint with this HTTP status
    token_hang: bool = False  # never answer the token endpoint
    reject_refresh: bool = False  # refuse every refresh credential (invalid_grant)
    limits: bool = True  # enforce the platform's rate limits


@dataclass
class Stats:
    token_calls: int = 0
    api_calls: int = 0
    rejected_api_calls: int = 0
    throttled_api_calls: int = 0  # refused for a rate limit (429...)
    reused_refresh_tokens: int = 0
    refused_refreshes: int = 0  # refresh credentials the token endpoint refused (spent, dead, unknown)
    concurrent: int = 0
    max_concurrent: int = 0
    presented_refresh_tokens: list[str] = field(default_factory=list)
    token_call_times: list[float] = field(default_factory=list)  # when each token call came in


class TokenBook:
    """Issued tokens and their expiry; refresh tokens are single use when rotating."""

    def __init__(self, clock: Clock, lifetime: float, refresh_lifetime: float = 30 * 86400) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.refresh_lifetime = refresh_lifetime
        self.access: dict[str, float] = {}
        self.refresh: dict[str, float] = {}  # live refresh tokens -> expiry
        self.used_refresh: set[str] = set()

    def issue_access(self, prefix: str = "at") -> tuple[str, float]:
        token = f"{prefix}-{secrets.token_hex(12)}"
        self.access[token] = self.clock.now() + self.lifetime
        return token, self.lifetime

    def issue_refresh(self, prefix: str = "rt") -> str:
        token = f"{prefix}-{secrets.token_hex(12)}"
        self.refresh[token] = self.clock.now() + self.refresh_lifetime
        return token

    def access_state(self, token: str | None) -> str:
        """'ok', 'expired', 'invalid' (unknown) or 'missing'."""
        if not token:
            return "missing"
        expires = self.access.get(token)
        if expires is None:
            return "invalid"
        return "ok" if self.clock.now() < expires else "expired"

    def use_refresh(self, token: str, *, rotate: bool) -> str:
        """'ok', 'reused', 'expired' or 'invalid'; a rotating token dies on use."""
        if token in self.used_refresh:
            return "reused"
        expires = self.refresh.get(token)
        if expires is None:
            return "invalid"
        if self.clock.now() >= expires:
            return "expired"
        if rotate:
            del self.refresh[token]
            self.used_refresh.add(token)
        return "ok"

    def expire_all(self) -> None:
        now = self.clock.now()
        self.access = dict.fromkeys(self.access, now)


class Sandbox:
    """Base of the per-platform sandboxes: subclasses add their routes."""

    name = "sandbox"

    def __init__(self, clock: Clock | None = None, lifetime: float = 3600) -> None:
        self.clock = clock or SystemClock()
        self.book = TokenBook(self.clock, lifetime)
        self.knobs = Knobs()
        self.stats = Stats()
        self.hang = asyncio.Event()
        self.arrivals = Arrivals()  # calls that counted against a rate limit

    def app(self) -> web.Application:
        # bodies as they arrived on the wire (a gzip body stays gzip): what a platform signs and checks
        app = web.Application(client_max_size=1024**3, handler_args={"auto_decompress": False})
        app.router.add_get("/_sandbox/stats", self._stats)
        app.router.add_post("/_sandbox/expire", self._expire)
        app.router.add_post("/_sandbox/knobs", self._set_knobs)
        app.router.add_get("/_sandbox/arrivals", self._arrivals)
        app.cleanup_ctx.append(self._watching)
        app.router.add_post("/_sandbox/refresh_token", self._seed)
        self.add_routes(app)
        return app

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    # -- token endpoint helpers ---------------------------------------------------------

    async def token_gate(self) -> web.Response | None:
        """Count a token call; answer it badly if the knobs say so."""
        self.stats.token_calls += 1
        self.stats.token_call_times.append(self.clock.now())
        if self.knobs.token_hang:
            await self.hang.wait()
        if self.knobs.token_status is not None:
            return web.json_response(
                {"error": "server_error", "message": "sandbox told to fail"},
                status=self.knobs.token_status,
            )
        return None

    def note_refresh(self, token: str) -> None:
        if token in self.stats.presented_refresh_tokens:
            self.stats.reused_refresh_tokens += 1
        self.stats.presented_refresh_tokens.append(token)

    # -- API helpers ------------------------------------------------------------------------

    async def api_reply(
        self, request: web.Request, extra: dict[str, Any] | None = None, *, inside: str | None = None
    ) -> web.StreamResponse:
        """The sandbox API: echo what arrived (as the member `inside` of the reply, when
        given: a platform's envelope), stream N bytes, or swallow an upload."""
        self.stats.api_calls += 1
        self.stats.concurrent += 1
        self.stats.max_concurrent = max(self.stats.max_concurrent, self.stats.concurrent)
        try:
            tail = request.path.rsplit("/", 1)[-1]
            if tail == "stream":
                return await self._stream(request, int(request.query.get("bytes", "0")))
            if tail == "slow":
                await asyncio.sleep(float(request.query.get("seconds", "0.05")))
            digest, size = hashlib.sha256(), 0
            async for chunk in request.content.iter_chunked(65536):
                digest.update(chunk)
                size += len(chunk)
            echo = {
                "ok": True,
                "sandbox": self.name,
                "method": request.method,
                "path": request.path,
                "query": request.rel_url.raw_query_string,
                "body_sha256": digest.hexdigest(),
                "body_bytes": size,
                "headers": {k.lower(): v for k, v in request.headers.items() if _shown(k)},
                **(extra or {}),
            }
            return web.json_response(echo if inside is None else {inside: echo})
        finally:
            self.stats.concurrent -= 1

    async def _stream(self, request: web.Request, size: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        left = size
        while left > 0:
            piece = CHUNK[: min(left, len(CHUNK))]
            await response.write(piece)
            left -= len(piece)
        await response.write_eof()
        return response

    # -- control routes ----------------------------------------------------------------------

    async def _stats(self, request: web.Request) -> web.Response:
        data = {k: v for k, v in vars(self.stats).items() if not isinstance(v, list)}
        return web.json_response(data)

    async def _watching(self, app: web.Application) -> AsyncIterator[None]:
        """Watch the sandbox's own event loop for stalls while it serves."""
        watcher = asyncio.create_task(self.arrivals.watch())
        yield
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    async def _arrivals(self, request: web.Request) -> web.Response:
        return web.json_response(self.arrivals.as_json())

    async def _seed(self, request: web.Request) -> web.Response:
        """A refresh token as if a seller had just authorized the app (for tests in other
        processes); a JSON object body names seed_refresh_token's arguments (TikTok: `cipher`)."""
        asked = await request.json() if request.can_read_body else {}
        return web.json_response({"refresh_token": self.seed_refresh_token(**asked)})

    def seed_refresh_token(self) -> str:
        return self.book.issue_refresh()

    async def _expire(self, request: web.Request) -> web.Response:
        self.book.expire_all()
        return web.json_response({"expired": True})

    async def _set_knobs(self, request: web.Request) -> web.Response:
        changes = await request.json()
        for key, value in changes.items():
            if not hasattr(self.knobs, key):
                return web.json_response({"error": f"unknown knob {key}"}, status=400)
            setattr(self.knobs, key, value)
        if not self.knobs.token_hang:
            self.hang.set()
            self.hang = asyncio.Event()
        return web.json_response(vars(self.knobs))


def _shown(header: str) -> bool:
    return header.lower() not in {"host", "content-length", "accept-encoding", "user-agent"}


def json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
