"""Shoptet sandbox: add-on install codes, OAuth -> API tokens, and the API's checks.

- `POST /action/ApiOAuthServer/token` exchanges a single-use install code for
  the e-shop's permanent OAuth access token (JSON body, as in install.php).
- `GET|POST /action/ApiOAuthServer/getAccessToken` with `Authorization: Bearer
  <OAuth access token>` issues a 30-minute API token; at most 5 valid per
  e-shop. What Shoptet does with a 6th is UNVERIFIED: the `token_limit` knob
  picks `refuse` (HTTP 429 `too_many_tokens`, the default) or `evict` (the
  oldest valid token stops working).
- `/api/...` checks `Shoptet-Access-Token` and answers Shoptet's error
  envelope: 401 `expired-token` / `invalid-token` / `missing-access-token`,
  403 `invalid-token-no-rights` on routes the add-on was not granted, and, like
  nginx's `limit_conn per_token 3`, HTTP 429 for a 4th concurrent connection
  on one token.

- a leaky bucket per e-shop (`capacity` drops, `leak` per second; "200 drops,
  10/s" in third-party code, UNVERIFIED): every API reply says
  `X-RateLimit-Bucket-Filling: used/max`, and a full bucket answers 429 with
  `Retry-After: <HTTP-date>` (the second a drop fits again);
- 423 Locked for a write identical (method, path, body) to one still running.

The OAuth access token is permanent, so `reused_refresh_tokens` counts up by
design here; `max_valid_tokens` and `max_concurrent_per_token` are the
numbers to watch.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from authproxy.models import Clock
from authproxy.sandbox.base import Knobs, Sandbox, Stats, json_body
from authproxy.sandbox.limits import LeakyBucket, http_date

OAUTH = "/action/ApiOAuthServer"
API_LIFETIME = 1800.0
MAX_VALID_TOKENS = 5
MAX_CONNECTIONS = 3
NO_RIGHTS = frozenset({"/api/stocks", "/api/invoices"})  # endpoints this add-on was not granted
TOO_MANY = "<html><head><title>429 Too Many Requests</title></head><body>429 Too Many Requests</body></html>"
FILLING = "X-RateLimit-Bucket-Filling"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class ShoptetKnobs(Knobs):
    suspended: bool = False  # the e-shop suspended the add-on
    token_limit: str = "refuse"  # a 6th valid API token: "refuse" or "evict" the oldest


@dataclass
class ShoptetStats(Stats):
    max_concurrent_per_token: int = 0
    too_many_connections: int = 0  # 429s for a 4th connection on one token
    max_valid_tokens: int = 0  # most valid API tokens one e-shop had at once
    refused_tokens: int = 0  # getAccessToken calls refused by the 5-token limit
    getaccesstoken_methods: list[str] = field(default_factory=list)
    locked: int = 0  # 423s for an identical write still running


class ShoptetSandbox(Sandbox):
    name = "shoptet"
    knobs: ShoptetKnobs
    stats: ShoptetStats

    def __init__(
        self,
        client_id: str = "sandbox-addon",
        client_secret: str | None = None,
        clock: Clock | None = None,
        lifetime: float = API_LIFETIME,
        redirect_uri: str | None = None,
        bucket: tuple[int, float] = (200, 10.0),
    ) -> None:
        super().__init__(clock, lifetime)
        self.knobs = ShoptetKnobs()
        self.stats = ShoptetStats()
        self.client_id, self.client_secret, self.redirect_uri = client_id, client_secret, redirect_uri
        self.codes: dict[str, int] = {}  # install code -> e-shop id (single use)
        self.oauth_tokens: dict[str, int] = {}  # OAuth access token -> e-shop id
        self.owners: dict[str, int] = {}  # API token -> e-shop id
        self.inflight: dict[str, int] = {}  # API token -> open connections
        self.held = asyncio.Event()  # calls to .../held wait for it: connections kept open at will
        self.bucket_size = bucket
        self.buckets: dict[int, LeakyBucket] = {}  # e-shop id -> its leaky bucket
        self.writing: set[tuple[str, str, str]] = set()  # writes in progress: method, path, body hash
        self.retry_dates: list[float] = []  # every Retry-After it sent (Unix time)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(OAUTH + "/token", self.token)
        app.router.add_route("GET", OAUTH + "/getAccessToken", self.get_access_token)
        app.router.add_route("POST", OAUTH + "/getAccessToken", self.get_access_token)
        app.router.add_route("*", "/api/{tail:.*}", self.api)

    # -- set-up helpers for tests and the demo ----------------------------------------------

    def install_code(self, eshop_id: int = 222651) -> str:
        """The code Shoptet sends to the add-on's install URL."""
        code = secrets.token_urlsafe(48)
        self.codes[code] = eshop_id
        return code

    def seed_oauth_token(self, eshop_id: int = 222651) -> str:
        """An OAuth access token as if the add-on had just been installed."""
        token = secrets.token_hex(24)
        self.oauth_tokens[token] = eshop_id
        return token

    def bucket(self, eshop_id: int) -> LeakyBucket:
        return self.buckets.setdefault(eshop_id, LeakyBucket(*self.bucket_size))

    def fill_bucket(self, eshop_id: int = 222651) -> None:
        """Someone else (another add-on, the shop's own scripts) used up the e-shop's bucket."""
        bucket = self.bucket(eshop_id)
        bucket.drain(self.arrivals.clock())
        bucket.level = float(bucket.capacity)

    def valid_tokens(self, eshop_id: int) -> list[str]:
        now = self.clock.now()
        mine = (token for token, owner in self.owners.items() if owner == eshop_id)
        return [token for token in mine if self.book.access.get(token, 0) > now]

    # -- OAuth server ------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        if (failure := await self.token_gate()) is not None:
            return failure
        body = json_body(await request.read()) if request.content_type == "application/json" else None
        if not isinstance(body, dict):
            return web.json_response({"error": "invalid_request"}, status=400)
        if body.get("client_id") != self.client_id or body.get("client_secret") != self.client_secret:
            return web.json_response({"error": "invalid_client"}, status=401)
        if body.get("grant_type") != "authorization_code" or body.get("scope") != "api":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if self.redirect_uri is not None and body.get("redirect_uri") != self.redirect_uri:
            return web.json_response(
                {"error": "invalid_grant", "error_description": "redirect_uri"}, status=400
            )
        eshop_id = self.codes.pop(str(body.get("code")), None)
        if eshop_id is None:
            return web.json_response({"error": "invalid_grant", "error_description": "bad code"}, status=400)
        return web.json_response(
            {
                "access_token": self.seed_oauth_token(eshop_id),
                "expires_in": None,
                "token_type": "Bearer",
                "scope": "api",
                "eshopId": eshop_id,
                "eshopUrl": f"https://{eshop_id}.myshoptet.com/",
                "contactEmail": "owner@example.com",
            }
        )

    async def get_access_token(self, request: web.Request) -> web.Response:
        if (failure := await self.token_gate()) is not None:
            return failure
        self.stats.getaccesstoken_methods.append(request.method)
        scheme, _, oauth_token = request.headers.get("Authorization", "").partition(" ")
        self.note_refresh(oauth_token)
        eshop_id = self.oauth_tokens.get(oauth_token) if scheme == "Bearer" else None
        if eshop_id is None or self.knobs.reject_refresh:
            return web.json_response({"error": "invalid_token"}, status=401)
        if self.knobs.suspended:
            return web.json_response({"error": "addon_suspended"}, status=403)
        valid = self.valid_tokens(eshop_id)
        if len(valid) >= MAX_VALID_TOKENS:
            if self.knobs.token_limit != "evict":
                self.stats.refused_tokens += 1
                return web.json_response(
                    {
                        "error": "too_many_tokens",
                        "error_description": "It is possible to request a maximum of 5 valid tokens.",
                    },
                    status=429,
                )
            del self.book.access[min(valid, key=self.book.access.__getitem__)]
        token, lifetime = self.book.issue_access(f"{eshop_id}-a")
        self.owners[token] = eshop_id
        self.stats.max_valid_tokens = max(self.stats.max_valid_tokens, len(self.valid_tokens(eshop_id)))
        return web.json_response({"access_token": token, "expires_in": int(lifetime)})

    # -- API ------------------------------------------------------------------------------------

    async def api(self, request: web.Request) -> web.StreamResponse:
        token = request.headers.get("Shoptet-Access-Token", "")
        if not token:
            return await self._checked(request, token)
        if self.inflight.get(token, 0) >= MAX_CONNECTIONS:
            self.stats.too_many_connections += 1
            return web.Response(status=429, text=TOO_MANY, content_type="text/html")
        self.inflight[token] = self.inflight.get(token, 0) + 1
        self.stats.max_concurrent_per_token = max(self.stats.max_concurrent_per_token, self.inflight[token])
        try:
            return await self._checked(request, token)
        finally:
            self.inflight[token] -= 1
            if not self.inflight[token]:
                del self.inflight[token]

    async def _checked(self, request: web.Request, token: str) -> web.StreamResponse:
        state = self.book.access_state(token)
        if state == "missing":
            message = "Missing access token. Please add `Shoptet-Access-Token` header to your request."
            return self._error(401, "missing-access-token", message)
        if state == "invalid":
            return self._error(401, "invalid-token", "Invalid access token.")
        if state == "expired":
            return self._error(401, "expired-token", "Token is expired. Please ask for new one.")
        if self.knobs.suspended:
            return self._error(401, "invalid-token", "Addon installation is not approved.")
        if request.path.rstrip("/") in NO_RIGHTS:
            shown = f"{token[:3]}..{token[-3:]}"
            message = f'Your access token "{shown}" has no defined rights for this resource.'
            return self._error(403, "invalid-token-no-rights", message)
        eshop_id = self.owners.get(token)
        if eshop_id is None or not self.knobs.limits:
            return await self._answer(request, eshop_id)
        bucket = self.bucket(eshop_id)
        now = self.arrivals.clock()
        passed = bucket.add(now)
        self.arrivals.calls.setdefault(str(eshop_id), []).append((now, passed))
        reply: web.StreamResponse
        if not passed:
            self.stats.throttled_api_calls += 1
            free_at = bucket.free_at(now)
            self.retry_dates.append(free_at)
            reply = self._error(429, "too-many-requests", "API rate limit exceeded.")
            reply.headers["Retry-After"] = http_date(free_at)
        elif request.method in WRITES:
            reply = await self._write(request, eshop_id)
        else:
            reply = await self._answer(request, eshop_id)
        if not reply.prepared:
            reply.headers[FILLING] = bucket.filling()
        return reply

    async def _answer(self, request: web.Request, eshop_id: int | None, **extra: Any) -> web.StreamResponse:
        if request.path.endswith("/held"):
            await self.held.wait()
        return await self.api_reply(request, {"eshopId": eshop_id, **extra})

    async def _write(self, request: web.Request, eshop_id: int) -> web.StreamResponse:
        """423 while an identical write (method, path, body) is still being processed."""
        body = await request.read()
        digest = hashlib.sha256(body).hexdigest()
        key = (request.method, request.path_qs, digest)
        if key in self.writing:
            self.stats.locked += 1
            return self._error(423, "locked", "An identical request is being processed, try again later.")
        self.writing.add(key)
        try:
            return await self._answer(request, eshop_id, body_sha256=digest, body_bytes=len(body))
        finally:
            self.writing.discard(key)

    def _error(self, status: int, code: str, message: str) -> web.Response:
        self.stats.rejected_api_calls += 1
        request_id = secrets.token_hex(8)
        body: dict[str, Any] = {
            "data": None,
            "errors": [{"errorCode": code, "message": message, "instance": "unknown"}],
            "metadata": {"requestId": request_id},
        }
        return web.json_response(body, status=status, headers={"X-Request-ID": request_id})
