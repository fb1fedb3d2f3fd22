"""TikTok Shop sandbox: signed calls, absolute expiry stamps, rotating refresh tokens.

API calls are checked in the order a gateway would (platforms.md §4): app_key,
sign present, timestamp within [now - 5 min, now + 30 s] of the sandbox clock,
the sign recomputed over the received query and the exact body bytes
(multipart excluded), the `x-tts-access-token` header, the scope, and
`shop_cipher` (required on shop-scoped paths, refused on the paths that take
none). Errors use TikTok's envelope and codes. HTTP statuses are not
documented except 401 for a bad sign: the sandbox answers credential errors
with `error_status` (401; tests also run 200, the other reading), parameter
errors with 400 and scope errors with 403.

The token endpoints are GETs with the app secret in the query. Codes for a
dead refresh token (36004001 expired, 36004005 unknown) and a bad auth code
(36004004) are the ones integrators observe; bad app credentials or grant
type are undocumented and answered with 36009004 here. Refresh tokens rotate
(single use) unless `rotate=False`: whether TikTok rotates is UNVERIFIED, so
the stricter reading is the default. A grant lasts `authorization_lifetime`
seconds (the duration the seller chose): `refresh_token_expire_in` is its end,
carried by every refresh token of the grant, and a refresh after it is
36004001.

Sellers and their shops: every grant (an authorization code, a seeded refresh
token) is one seller's, with shops of their own (`shops=` when issuing it; else
one per `shop_ciphers`, or one new shop). Its tokens, rotated ones included,
belong to that seller: Get Authorized Shops (`GET /authorization/202309/shops`,
signed like any call) lists them as TikTok does (`data.shops[]`: `cipher`,
`code`, `id`, `name`, `region`, `seller_type`), and a call carrying another
seller's `shop_cipher` is refused with 101000, as TikTok refuses a token and
cipher that do not match. Tokens made outside a grant (`book.issue_access`) are
nobody's: any accepted cipher goes.

Rate limit: 50 calls per second per API path and shop (the app is the
sandbox's one), HTTP 429 with code 36009002 beyond it (platforms.md §8.2).
TikTok publishes no burst; the sandbox's token bucket holds one second's worth
(`rate_limit=(50, 50)`), the common reading of "50 QPS". Each well-authenticated
call is recorded in `arrivals` (key "<shop_cipher or token>|<path>").
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Any

from aiohttp import web

from authproxy.models import Clock
from authproxy.sandbox.base import Sandbox
from authproxy.sandbox.limits import TokenBucket

REFRESH_PATH = "/api/v2/token/refresh"
GET_PATH = "/api/v2/token/get"
TOKEN_HEADER = "x-tts-access-token"
PAST_WINDOW, FUTURE_WINDOW = 300, 30
CODE_LIFETIME = 1800
#: paths that refuse shop_cipher; every other API path requires it
NOT_SHOP_SCOPED = (
    ("*", re.compile(r"/(authorization|seller)/[0-9]{6}/")),
    ("*", re.compile(r"/product/[0-9]{6}/global_products")),
    ("*", re.compile(r"/product/[0-9]{6}/files/upload")),
    ("*", re.compile(r"/product/[0-9]{6}/images/upload")),
    ("POST", re.compile(r"/product/[0-9]{6}/brands")),
)
APP_KEY_INVALID = (36009004, "Invalid credentials. Invalid `app_key` query parameter.")
SIGN_MISSING = (
    36009004,
    "Missing credentials. The request does not include a required signature in the query.",
)
SIGN_INVALID = (106001, "Invalid credentials. The 'sign' query parameter is invalid.")
TS_NEGATIVE = "Invalid timestamp. The value of the `timestamp` query parameter must not be lesser than 0."
TS_OLD = (
    "Invalid timestamp. The value of the `timestamp` query parameter must not be earlier "
    "than 5 minutes before the current time."
)
TS_FUTURE = (
    "Invalid timestamp. The value of the `timestamp` query parameter must not exceed the "
    "current time by more than 30 seconds."
)
TOKEN_EXPIRED = (105002, "Expired credentials. The `x-tts-access-token` header has expired.")
TOKEN_INVALID = (36009004, "Invalid credentials. The `x-tts-access-token` header is invalid.")
SCOPE_DENIED = (105005, "Access denied. The app is not authorized to access the endpoint.")
CIPHER_MISSING = (
    106013,
    "Missing identifier. The `shop_cipher` query parameter is required to identify the target shop.",
)
CIPHER_UNEXPECTED = (
    36009004,
    "Unexpected identifier. The `shop_cipher` query parameter is not required for this request.",
)
TOO_MANY = (36009002, "Too many requests. The rate limit of this API has been exceeded, try again later.")
CIPHER_MISMATCH = (
    101000,
    "Invalid query or header. The `category_asset_cipher` query parameter or `x-tts-access-token` "
    "header is invalid.",
)


def envelope(code: int, message: str, status: int = 200, data: Any = None) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message, "request_id": secrets.token_hex(16)}
    if data is not None:
        body["data"] = data
    return web.json_response(body, status=status)


class TikTokSandbox(Sandbox):
    name = "tiktok"

    def __init__(
        self,
        app_key: str,
        app_secret: str,
        clock: Clock | None = None,
        lifetime: float = 7 * 86400,
        shop_ciphers: tuple[str, ...] = (),
        rotate: bool = True,
        rate_limit: tuple[float, int] = (50.0, 50),
        authorization_lifetime: float = 365 * 86400,
    ) -> None:
        super().__init__(clock, lifetime)
        self.book.refresh_lifetime = authorization_lifetime  # a new grant's refresh token lives this long
        self.app_key, self.app_secret, self.rotate = app_key, app_secret, rotate
        self.shop_ciphers = set(shop_ciphers)  # empty: any cipher is accepted
        self.error_status = 401
        self.denied_paths: set[str] = set()  # answered 105005 (scope not granted)
        self.codes: dict[str, float] = {}  # authorization code -> expiry
        self.token_queries: list[dict[str, str]] = []  # what the token endpoints received
        self.rate_limit = rate_limit
        self.buckets: dict[str, TokenBucket] = {}  # "<shop>|<path>" -> its bucket
        self.sellers: dict[str, list[dict[str, str]]] = {}  # grant -> its seller's shops
        self.grant_of: dict[str, str] = {}  # access or refresh token (or auth code) -> its grant
        self.shop_lookups = 0  # Get Authorized Shops calls that were answered

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(GET_PATH, self.token_get)
        app.router.add_get(REFRESH_PATH, self.token_refresh)
        app.router.add_get(r"/authorization/{version:[0-9]{6}}/shops", self.authorized_shops)
        app.router.add_route("*", r"/{service}/{version:[0-9]{6}}/{tail:.*}", self.api)

    # -- seeding ----------------------------------------------------------------------------

    def seed_refresh_token(self, shops: list[dict[str, str]] | None = None, cipher: str | None = None) -> str:
        """A refresh token as if a seller (with `shops`, or one shop of `cipher`) had just
        authorized the app."""
        if cipher is not None:
            shops = [self.shop(cipher)]
        token = self.book.issue_refresh("TTP_rt")
        self.grant_of[token] = self._new_grant(shops)
        return token

    def issue_auth_code(self, shops: list[dict[str, str]] | None = None) -> str:
        """A single-use authorization code of a seller with `shops`, valid 30 minutes."""
        code = f"TTP_code-{secrets.token_hex(8)}"
        self.codes[code] = self.clock.now() + CODE_LIFETIME
        self.grant_of[code] = self._new_grant(shops)
        return code

    def shops_of(self, token: str) -> list[dict[str, str]]:
        """The shops of the seller a token (or code) was issued to."""
        return self.sellers[self.grant_of[token]]

    @staticmethod
    def shop(cipher: str, name: str = "Sandbox Shop", region: str = "GB") -> dict[str, str]:
        """A shop as Get Authorized Shops lists it."""
        number = int(hashlib.sha256(cipher.encode()).hexdigest()[:12], 16)
        return {
            "cipher": cipher,
            "code": f"GBLC{number % 10**8:08d}",
            "id": str(7_000_000_000_000_000_000 + number),
            "name": name,
            "region": region,
            "seller_type": "LOCAL",
        }

    def _new_grant(self, shops: list[dict[str, str]] | None) -> str:
        if shops is None:
            ciphers = sorted(self.shop_ciphers) or [f"ROW_{secrets.token_hex(12)}"]
            shops = [self.shop(cipher) for cipher in ciphers]
        grant = secrets.token_hex(8)
        self.sellers[grant] = shops
        return grant

    # -- token endpoints ----------------------------------------------------------------------

    async def token_get(self, request: web.Request) -> web.Response:
        query = await self._token_call(request, "authorized_code")
        if isinstance(query, web.Response):
            return query
        code = query.get("auth_code", "")
        expires = self.codes.pop(code, None)
        if expires is None or self.clock.now() >= expires:
            return envelope(36004004, "invalid auth code")
        refresh = self.book.issue_refresh("TTP_rt")
        self.grant_of[refresh] = self.grant_of[code]
        return self._issue(refresh)

    async def token_refresh(self, request: web.Request) -> web.Response:
        query = await self._token_call(request, "refresh_token")
        if isinstance(query, web.Response):
            return query
        presented = query.get("refresh_token", "")
        self.note_refresh(presented)
        grant_ends = self.book.refresh.get(presented)
        outcome = (
            "invalid" if self.knobs.reject_refresh else self.book.use_refresh(presented, rotate=self.rotate)
        )
        if outcome != "ok":
            self.stats.refused_refreshes += 1
        if outcome == "expired":
            return envelope(36004001, "rt has expired")
        if outcome != "ok" or grant_ends is None:
            return envelope(36004005, "can not find related auth record")
        if not self.rotate:
            return self._issue(presented)
        rotated = self.book.issue_refresh("TTP_rt")
        self.book.refresh[rotated] = grant_ends  # the grant's end, not a new one
        if presented in self.grant_of:
            self.grant_of[rotated] = self.grant_of[presented]  # the same seller's
        return self._issue(rotated)

    async def _token_call(self, request: web.Request, grant: str) -> dict[str, str] | web.Response:
        if (failure := await self.token_gate()) is not None:
            return failure
        query = {key: request.query[key] for key in request.query}
        self.token_queries.append(query)
        if query.get("app_key") != self.app_key or query.get("app_secret") != self.app_secret:
            return envelope(*APP_KEY_INVALID)
        if query.get("grant_type") != grant:
            return envelope(36009004, f"Invalid grant_type. Only `{grant}` is accepted.")
        return query

    def _issue(self, refresh_token: str) -> web.Response:
        access, lifetime = self.book.issue_access("TTP_at")
        if refresh_token in self.grant_of:
            self.grant_of[access] = self.grant_of[refresh_token]
        now = self.clock.now()
        data = {
            "access_token": access,
            "access_token_expire_in": int(now + lifetime),
            "refresh_token": refresh_token,
            "refresh_token_expire_in": int(self.book.refresh[refresh_token]),
            "open_id": "sandbox-open-id",
            "seller_name": "Sandbox Seller",
            "seller_base_region": "GB",
            "user_type": 0,
            "granted_scopes": ["seller.order.info", "seller.product.basic"],
        }
        return envelope(0, "success", data=data)

    # -- API ----------------------------------------------------------------------------------

    async def api(self, request: web.Request) -> web.StreamResponse:
        multipart = request.content_type == "multipart/form-data"
        body = b"" if multipart else await request.read()
        failure = self.check(request, body)
        if failure is not None:
            self.stats.rejected_api_calls += 1
            return failure
        if self.knobs.limits and not self._within_limit(request):
            self.stats.throttled_api_calls += 1
            return envelope(*TOO_MANY, status=429)
        extra: dict[str, Any] = {"code": 0, "message": "Success", "request_id": secrets.token_hex(16)}
        if not multipart:  # the body was read to check the sign: report it here
            extra.update(body_sha256=hashlib.sha256(body).hexdigest(), body_bytes=len(body))
        return await self.api_reply(request, extra)

    async def authorized_shops(self, request: web.Request) -> web.StreamResponse:
        """Get Authorized Shops: the token's seller's shops, checked and limited like any call."""
        failure = self.check(request, await request.read())
        if failure is not None:
            self.stats.rejected_api_calls += 1
            return failure
        if self.knobs.limits and not self._within_limit(request):
            self.stats.throttled_api_calls += 1
            return envelope(*TOO_MANY, status=429)
        token = request.headers.get(TOKEN_HEADER, "")
        shops = self.shops_of(token) if token in self.grant_of else []
        self.shop_lookups += 1
        extra = {"code": 0, "message": "Success", "request_id": secrets.token_hex(16)}
        return await self.api_reply(request, {**extra, "data": {"shops": shops}})

    def _within_limit(self, request: web.Request) -> bool:
        """Counted per shop (its cipher, else its token) and API path; recorded either way."""
        shop = request.query.get("shop_cipher") or request.headers.get(TOKEN_HEADER, "")
        key = f"{shop}|{request.path}"
        bucket = self.buckets.setdefault(key, TokenBucket(*self.rate_limit))
        now = self.arrivals.clock()
        passed = bucket.take(now)
        self.arrivals.calls.setdefault(key, []).append((now, passed))
        return passed

    def check(self, request: web.Request, body: bytes) -> web.Response | None:
        """The error TikTok would answer, or None when the call is well authenticated."""
        query = request.query
        if query.get("app_key") != self.app_key:
            return envelope(*APP_KEY_INVALID, status=self.error_status)
        if "sign" not in query:
            return envelope(*SIGN_MISSING, status=self.error_status)
        if (timestamp := self._timestamp_error(query.get("timestamp", ""))) is not None:
            return envelope(36009004, timestamp, status=self.error_status)
        if not hmac.compare_digest(query["sign"], self.expected_sign(request, body)):
            return envelope(*SIGN_INVALID, status=401)
        state = self.book.access_state(request.headers.get(TOKEN_HEADER))
        if state != "ok":
            return envelope(
                *(TOKEN_EXPIRED if state == "expired" else TOKEN_INVALID), status=self.error_status
            )
        if request.path in self.denied_paths:
            return envelope(*SCOPE_DENIED, status=403)
        return self._cipher_error(request)

    def _timestamp_error(self, raw: str) -> str | None:
        if not raw.isdigit():
            return TS_NEGATIVE
        now = self.clock.now()
        if int(raw) < now - PAST_WINDOW:
            return TS_OLD
        if int(raw) > now + FUTURE_WINDOW:
            return TS_FUTURE
        return None

    def expected_sign(self, request: web.Request, body: bytes) -> str:
        """secret + path + sorted key/value (first value of each) + body + secret, HMAC-SHA256."""
        query = request.query
        keys = sorted({key for key in query if key not in ("sign", "access_token")})
        text = request.path + "".join(key + query[key] for key in keys)
        signed = body if request.content_type != "multipart/form-data" else b""
        message = self.app_secret.encode() + text.encode() + signed + self.app_secret.encode()
        return hmac.new(self.app_secret.encode(), message, hashlib.sha256).hexdigest()

    def _cipher_error(self, request: web.Request) -> web.Response | None:
        cipher = request.query.get("shop_cipher")
        scoped = not any(
            method in ("*", request.method) and pattern.match(request.path)
            for method, pattern in NOT_SHOP_SCOPED
        )
        if not scoped:
            return envelope(*CIPHER_UNEXPECTED, status=400) if cipher is not None else None
        if not cipher:
            return envelope(*CIPHER_MISSING, status=400)
        if self.shop_ciphers and cipher not in self.shop_ciphers:
            return envelope(*CIPHER_MISMATCH, status=self.error_status)
        grant = self.grant_of.get(request.headers.get(TOKEN_HEADER, ""))
        if grant is not None and cipher not in {shop["cipher"] for shop in self.sellers[grant]}:
            return envelope(*CIPHER_MISMATCH, status=self.error_status)  # another seller's shop
        return None
