"""Shopee Open Platform v2 sandbox (platforms.md §1).

Checks what Shopee checks: partner_id, the timestamp within 5 minutes of its
clock, the HMAC sign over the path as received, and an access token issued to
the shop_id / merchant_id in the query. Refresh tokens are single use and
rotate; the previous access token keeps working for 5 minutes after a refresh.
A refresh token dies `refresh_lifetime` seconds after its issue if unused (30
days; each refresh issues a new one), answered as Shopee does: "Your
refresh_token expired." (`refresh_token_expired`); a spent or unknown one is
"Invalid refresh_token.". Errors use Shopee's envelope, typo included:
`invalid_acceess_token`.
Shopee publishes no rate limits; `throttle_calls` makes the next calls answer
`error_rate_limit` (the HTTP status for it is UNVERIFIED: `throttle_status`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web

from authproxy.models import Clock
from authproxy.platforms.shopee import (
    AUTHORIZE_PATH,
    REFRESH_PATH,
    TOKEN_PATH,
    base_string,
    identity,
    is_public,
    sign,
)
from authproxy.sandbox.base import Sandbox, json_body

TIMESTAMP_WINDOW = 300
GRACE = 300  # the old access token's life after a refresh
CODE_LIFETIME = 600
ACCOUNTS = ("shop_id", "merchant_id")


class Refusal(Exception):
    """An answer in Shopee's error envelope."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(error)
        self.status, self.error, self.message = status, error, message

    def response(self) -> web.Response:
        body = {"request_id": _request_id(), "error": self.error, "message": self.message}
        return web.json_response(body, status=self.status)


class ShopeeSandbox(Sandbox):
    name = "shopee"

    def __init__(
        self,
        partner_id: int,
        partner_key: str,
        clock: Clock | None = None,
        lifetime: float = 14400,
        prefix: str = "",
        refresh_lifetime: float = 30 * 86400,
    ) -> None:
        super().__init__(clock, lifetime)
        self.book.refresh_lifetime = refresh_lifetime
        self.partner_id, self.partner_key, self.prefix = partner_id, partner_key, prefix.rstrip("/")
        self.owners: dict[str, frozenset[str]] = {}  # access/refresh token -> "shop_id:1", ...
        self.paired: dict[str, str] = {}  # refresh token -> the access token issued with it
        self.spent: set[tuple[str, str]] = set()  # (refresh token, account) already used
        self.codes: dict[str, tuple[str, float]] = {}  # code -> (account, expiry)
        self.main_accounts: dict[int, tuple[list[int], list[int]]] = {}
        self.consenting = "shop_id:1000001"  # who "clicks Authorize" on the consent page
        self.denied_paths: set[str] = set()  # API paths answered with error_permission
        self.invalid_token_status = 403  # HTTP status of invalid_acceess_token (UNVERIFIED)
        self.token_requests: list[dict[str, Any]] = []  # {"path", "query", "body", "at"} as received
        self.throttle_calls = 0  # answer this many next API calls with error_rate_limit
        self.throttle_status = 429

    def add_routes(self, app: web.Application) -> None:
        p = self.prefix
        app.router.add_get(p + AUTHORIZE_PATH, self.authorize)
        app.router.add_post(p + TOKEN_PATH, self.token_get)
        app.router.add_post(p + REFRESH_PATH, self.access_token_get)
        app.router.add_get(p + "/api/v2/{tail:.*}", self.api)
        app.router.add_post(p + "/api/v2/{tail:.*}", self.api)

    # -- helpers for tests and the demo ------------------------------------------------------

    def mint(self, shop: str) -> dict[str, Any]:
        """A first pair for a proxy shop segment ("123" or "merchant:9"), as a code exchange gives."""
        kind, number = identity(shop)
        return self.issue_pair([f"{kind}:{number}"])

    def add_main_account(self, main_id: int, shops: list[int], merchants: list[int]) -> None:
        self.main_accounts[main_id] = (shops, merchants)

    def issue_code(self, account: str) -> str:
        """A single-use code for "shop_id:<id>" or "main_account_id:<id>", valid 10 minutes."""
        code = secrets.token_hex(16)
        self.codes[code] = (account, self.clock.now() + CODE_LIFETIME)
        return code

    def issue_pair(self, accounts: Iterable[str]) -> dict[str, Any]:
        owners = frozenset(accounts)
        access, lifetime = self.book.issue_access("sp")
        refresh = self.book.issue_refresh("sprt")
        self.owners[access] = self.owners[refresh] = owners
        self.paired[refresh] = access
        return {"access_token": access, "refresh_token": refresh, "expire_in": int(lifetime)}

    # -- checks -------------------------------------------------------------------------------

    def _check_signed(self, request: web.Request, extra: str = "") -> None:
        """partner_id, timestamp window and sign, in the order Shopee reports them."""
        query = request.rel_url.query
        if query.get("partner_id") != str(self.partner_id):
            raise Refusal(403, "error_auth", "Invalid partner id.")
        try:
            timestamp = int(query.get("timestamp", ""))
        except ValueError:
            raise Refusal(403, "error_param", "Invalid timestamp.") from None
        if abs(self.clock.now() - timestamp) > TIMESTAMP_WINDOW:
            raise Refusal(403, "error_param", "Invalid timestamp.")
        base = base_string(self.partner_id, request.rel_url.raw_path, timestamp) + extra
        if query.get("sign", "") != sign(self.partner_key, base):
            raise Refusal(403, "error_sign", "Wrong sign.")

    def _account(self, request: web.Request) -> tuple[str, str]:
        query = request.rel_url.query
        present = [(kind, query[kind]) for kind in ACCOUNTS if kind in query]
        if len(present) != 1 or not present[0][1].isdigit():
            raise Refusal(400, "error_param", "Invalid shop id.")
        return present[0]

    async def _json(self, request: web.Request) -> dict[str, Any]:
        data = json_body(await request.read())
        self.token_requests.append(
            {
                "path": request.rel_url.raw_path,
                "query": request.rel_url.raw_query_string,
                "body": data,
                "at": self.clock.now(),
            }
        )
        if not isinstance(data, dict) or data.get("partner_id") != self.partner_id:
            raise Refusal(400, "error_param", "error params")
        return data

    # -- consent and token endpoints -----------------------------------------------------------

    async def authorize(self, request: web.Request) -> web.Response:
        """The consent page: `consenting` agrees at once and is sent to the redirect."""
        try:
            self._check_signed(request)
            redirect = request.rel_url.query.get("redirect")
            if not redirect:
                raise Refusal(400, "error_param", "error params")
        except Refusal as refusal:
            return refusal.response()
        kind, _, number = self.consenting.partition(":")
        parts = urlsplit(redirect)
        query = [*parse_qsl(parts.query, keep_blank_values=True)]
        query += [("code", self.issue_code(self.consenting)), (kind, number)]
        raise web.HTTPFound(urlunsplit(parts._replace(query=urlencode(query))))

    async def token_get(self, request: web.Request) -> web.Response:
        if (failure := await self.token_gate()) is not None:
            return failure
        try:
            self._check_signed(request)
            data = await self._json(request)
            account = self._code_account(data)
        except Refusal as refusal:
            return refusal.response()
        kind, _, number = account.partition(":")
        if kind != "main_account_id":
            return _ok(self.issue_pair([account]))
        shops, merchants = self.main_accounts.get(int(number), ([], []))
        owners = [f"shop_id:{i}" for i in shops] + [f"merchant_id:{i}" for i in merchants]
        pair = self.issue_pair(owners)
        return _ok({**pair, "shop_id_list": shops, "merchant_id_list": merchants})

    def _code_account(self, data: dict[str, Any]) -> str:
        present = [k for k in ("shop_id", "main_account_id") if k in data]
        if len(present) != 1 or not isinstance(data[present[0]], int):
            raise Refusal(400, "error_param", "error params")
        account = f"{present[0]}:{data[present[0]]}"
        issued = self.codes.pop(str(data.get("code", "")), None)
        if issued is None or issued[0] != account or self.clock.now() >= issued[1]:
            raise Refusal(403, "error_param", "Invalid code")
        return account

    async def access_token_get(self, request: web.Request) -> web.Response:
        if (failure := await self.token_gate()) is not None:
            return failure
        try:
            self._check_signed(request)
            data = await self._json(request)
            present = [k for k in ACCOUNTS if k in data]
            if len(present) != 1 or not isinstance(data[present[0]], int):
                raise Refusal(400, "error_param", "error params")
            account = f"{present[0]}:{data[present[0]]}"
            presented = str(data.get("refresh_token", ""))
            self._use_refresh(presented, account)
        except Refusal as refusal:
            if "refresh_token" in refusal.message:
                self.stats.refused_refreshes += 1
            return refusal.response()
        pair = self.issue_pair([account])
        kind, _, number = account.partition(":")
        return _ok({**pair, "partner_id": self.partner_id, kind: int(number)})

    def _use_refresh(self, token: str, account: str) -> None:
        """Single use per account (a main account's shared token: once per shop)."""
        owners = self.owners.get(token, frozenset())
        self.note_refresh(token if len(owners) <= 1 else f"{token}@{account}")
        invalid = Refusal(403, "error_param", "Invalid refresh_token.")
        if self.knobs.reject_refresh or account not in owners or (token, account) in self.spent:
            raise invalid
        expires = self.book.refresh.get(token)
        if expires is None:
            raise invalid
        if self.clock.now() >= expires:
            raise Refusal(403, "refresh_token_expired", "Your refresh_token expired.")
        self.spent.add((token, account))
        if all((token, owner) in self.spent for owner in owners):
            del self.book.refresh[token]
            self.book.used_refresh.add(token)
        old = self.paired.get(token)
        if old in self.book.access:
            self.book.access[old] = min(self.book.access[old], self.clock.now() + GRACE)

    # -- API ------------------------------------------------------------------------------------

    async def api(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path.removeprefix(self.prefix)
        try:
            if is_public(path):
                self._check_signed(request)
                return await self.api_reply(request, _envelope())
            kind, number = self._account(request)
            token = request.rel_url.query.get("access_token", "")
            self._check_signed(request, token + number)
            self._check_token(token, f"{kind}:{number}")
            if path in self.denied_paths:
                raise Refusal(403, "error_permission", "No permission. Please inform seller.")
            if self.throttle_calls > 0:
                self.throttle_calls -= 1
                self.stats.throttled_api_calls += 1
                raise Refusal(self.throttle_status, "error_rate_limit", "Too many requests, try later.")
        except Refusal as refusal:
            self.stats.rejected_api_calls += 1
            return refusal.response()
        return await self.api_reply(request, _envelope())

    def _check_token(self, token: str, account: str) -> None:
        state = self.book.access_state(token)
        if state != "ok" or account not in self.owners.get(token, frozenset()):
            raise Refusal(self.invalid_token_status, "invalid_acceess_token", "Invalid access_token.")


def _request_id() -> str:
    return secrets.token_hex(16)


def _envelope() -> dict[str, Any]:
    return {"request_id": _request_id(), "error": "", "message": ""}


def _ok(fields: dict[str, Any]) -> web.Response:
    return web.json_response({**fields, **_envelope()})
