"""Shopee Open Platform v2 (platforms.md §1).

Auth lives in the query: `partner_id, timestamp, access_token, shop_id |
merchant_id, sign`, where sign = HMAC-SHA256(partner_key, partner_id + path +
timestamp [+ access_token + shop_id|merchant_id]) in lowercase hex. Neither the
body nor other query parameters are signed, so client bytes pass untouched.

The shop segment names the identity: a numeric shop_id, `merchant:<id>` for
merchant-level (cross-border) APIs, and `main:<id>` only to exchange a
main-account authorization code. Refresh tokens are single use and rotate.
The invalid-token signal is the JSON `error` field, whatever the HTTP status.

A refresh token dies when unused for 30 days (`default_idle_lifetime`; each
refresh issues a new one): keep-alive's business. The authorisation itself ends
when the seller chose (at most 365 days, platforms.md §8.1); no token answer
says when, so its horizon is known only when an operator stored it
(`tokens set --authorized-until`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from authproxy.errors import ConfigError, RefreshError, RefreshRejected, UnknownShop
from authproxy.models import (
    NOT_THROTTLED,
    HttpReply,
    HttpRequest,
    Operation,
    OutgoingRequest,
    Quota,
    Throttle,
    Token,
    Verdict,
)
from authproxy.platforms.base import Platform, fits_inspection, media_type
from authproxy.platforms.oauth_common import json_object
from authproxy.platforms.signing import HmacSha256
from authproxy.platforms.throttling import gate_throttle
from authproxy.query import OAUTH_SECRETS, add_params
from authproxy.settings import SHOPEE_ACCOUNT, ShopeeApp

HOSTS = {
    "global": "https://partner.shopeemobile.com",
    "china": "https://openplatform.shopee.cn",
    "brazil": "https://openplatform.shopee.com.br",
    "sandbox": "https://openplatform.sandbox.test-stable.shopee.sg",
    "sandbox_china": "https://openplatform.sandbox.test-stable.shopee.cn",
}
TOKEN_PATH = "/api/v2/auth/token/get"
REFRESH_PATH = "/api/v2/auth/access_token/get"
AUTHORIZE_PATH = "/api/v2/shop/auth_partner"
ACCESS_LIFETIME = 4 * 3600.0  # used only when a reply carrying a new pair omits expire_in
REFRESH_LIFETIME = 30 * 86400.0
#: Shopee's own typo first; the spelled-out form accepted defensively
INVALID_TOKEN_ERRORS = frozenset({"invalid_acceess_token", "invalid_access_token"})
INVALID_TOKEN_MARK = b"invalid_ac"  # what every one of them starts with
#: refresh answers that no retry can fix (messages VERIFIED, error codes third-party)
REJECTED_ERRORS = frozenset({"refresh_token_expired"})
REJECTED_MESSAGES = frozenset({"invalid refresh_token", "your refresh_token expired"})
KINDS = {None: "shop_id", "merchant": "merchant_id", "main": "main_account_id"}
#: Shopee publishes no limits (platforms.md §8.2): a conservative guess per shop and path
PATH_QUOTA = Quota(rate=10.0, burst=10)
RATE_LIMITED_ERROR = "error_rate_limit"
RATE_LIMITED_MARK = RATE_LIMITED_ERROR.encode()


def sign(partner_key: str, base: str) -> str:
    """HMAC-SHA256 keyed with the partner key as its UTF-8 string (not hex-decoded)."""
    return HmacSha256(partner_key.encode()).hexdigest(base.encode())


def base_string(partner_id: int, path: str, timestamp: int, access_token: str = "", account: str = "") -> str:
    """Public: partner_id+path+timestamp; shop/merchant: + access_token + the id."""
    return f"{partner_id}{path}{timestamp}{access_token}{account}"


def is_public(path: str) -> bool:
    """Paths signed without a token (auth endpoints, the consent link, public APIs)."""
    return path.startswith(("/api/v2/auth/", "/api/v2/public/")) or path == AUTHORIZE_PATH


@functools.lru_cache(maxsize=4096)  # every signed call asks; shops are few, bounded anyway
def identity(shop: str) -> tuple[str, int]:
    """("shop_id" | "merchant_id" | "main_account_id", id) for a shop segment."""
    match = SHOPEE_ACCOUNT.fullmatch(shop)
    if match is None:
        raise UnknownShop(
            f"{shop!r} is not a Shopee shop: use the numeric shop_id, merchant:<merchant_id> "
            "or (for a main-account code) main:<main_account_id>"
        )
    return KINDS[match.group(1)], int(match.group(2))


def api_identity(shop: str) -> tuple[str, int]:
    """A shop or merchant: main-account codes give per-shop tokens, never one to call with."""
    kind, number = identity(shop)
    if kind == "main_account_id":
        raise UnknownShop(
            f"{shop!r} only names a main account for its authorization code: "
            "call the API as the shop_id or merchant:<merchant_id> it covers"
        )
    return kind, number


class Shopee(Platform):
    name = "shopee"
    owned_query = frozenset({"partner_id", "timestamp", "access_token", "shop_id", "merchant_id", "sign"})
    #: third-party code waits 60 s after `error_rate_limit` (platforms.md §8.2)
    throttle_penalty = 60.0
    secret_query = OAUTH_SECRETS | {"sign"}
    single_use_refresh = True  # "can only be used once"
    default_idle_lifetime = REFRESH_LIFETIME  # 30 days, restarted by each refresh

    def __init__(self, settings: ShopeeApp) -> None:
        super().__init__(settings.base_url or HOSTS[settings.region], settings.refresh_idle_lifetime)
        self.settings = settings
        self.partner_id = settings.partner_id
        self._signer = HmacSha256(settings.partner_key.get_secret_value().encode())  # every call signs
        self.auth_url = (settings.auth_url or self.base_url).rstrip("/")
        # the signature covers the path exactly as sent, with any base-URL prefix
        self.api_prefix = urlsplit(self.base_url).path.rstrip("/")
        self.auth_prefix = urlsplit(self.auth_url).path.rstrip("/")

    def __repr__(self) -> str:
        return f"Shopee(partner_id={self.partner_id}, base_url={self.base_url!r})"

    def is_configured(self, shop: str) -> bool:
        return shop in self.settings.shops

    def _sign(self, path: str, timestamp: int, access_token: str = "", account: str = "") -> str:
        base = base_string(self.partner_id, path, timestamp, access_token, account)
        return self._signer.hexdigest(base.encode())

    def _public_url(self, path: str, now: float, extra: tuple[tuple[str, str], ...] = ()) -> str:
        """auth_url + path, with the public sign over the path as sent."""
        timestamp = int(now)
        query = {
            "partner_id": str(self.partner_id),
            "timestamp": str(timestamp),
            "sign": self._sign(self.auth_prefix + path, timestamp),
        }
        return f"{self.auth_url}{path}?{urlencode([*query.items(), *extra])}"

    def _post_json(self, path: str, fields: dict[str, Any], now: float) -> HttpRequest:
        body = json.dumps({**fields, "partner_id": self.partner_id}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        return HttpRequest("POST", self._public_url(path, now), headers, body)

    # -- tokens -----------------------------------------------------------------------

    def token_request(self, shop: str, current: Token | None, now: float) -> HttpRequest | None:
        kind, number = api_identity(shop)
        refresh = current.refresh_token if current else None
        if refresh is None and (seed := self.settings.shops.get(shop)) and seed.refresh_token:
            refresh = seed.refresh_token.get_secret_value()
        if not refresh:
            return None
        return self._post_json(REFRESH_PATH, {"refresh_token": refresh, kind: number}, now)

    def parse_token(self, shop: str, reply: HttpReply, current: Token | None, now: float) -> Token:
        api_identity(shop)
        data = _answer(reply)
        error, message = str(data.get("error") or ""), str(data.get("message") or "")
        if error:
            if error in REJECTED_ERRORS or message.strip().rstrip(".").lower() in REJECTED_MESSAGES:
                raise RefreshRejected(f"Shopee refused the refresh token: {error}: {message}")
            raise RefreshError(f"Shopee token endpoint error: {error}: {message} (HTTP {reply.status})")
        return _token(data, reply, current, now, self.idle_lifetime)

    # -- seller authorization -------------------------------------------------------------

    def authorize_url(self, redirect: str | None, state: str, now: float) -> str:
        """The consent link. Shopee has no `state` field: it rides in the redirect URL."""
        target = redirect or self.settings.redirect_url
        if not target:
            raise ConfigError("Shopee needs a redirect URL: pass one or set the app's redirect_url")
        if state:
            parts = urlsplit(target)
            query = urlencode([*parse_qsl(parts.query, keep_blank_values=True), ("state", state)])
            target = urlunsplit(parts._replace(query=query))
        return self._public_url(AUTHORIZE_PATH, now, (("redirect", target),))

    def code_request(self, shop: str, code: str, redirect: str | None, now: float) -> HttpRequest:
        kind, number = identity(shop)
        if kind == "merchant_id":
            raise UnknownShop("a Shopee code belongs to a shop_id or to main:<main_account_id>")
        return self._post_json(TOKEN_PATH, {"code": code, kind: number}, now)

    def parse_code_reply(self, shop: str, reply: HttpReply, now: float) -> dict[str, Token]:
        """One pair per shop; a main-account code's pair is shared by every shop and merchant."""
        kind, _ = identity(shop)
        data = _answer(reply)
        if data.get("error"):
            raise RefreshRejected(f"Shopee refused the code: {data.get('error')}: {data.get('message', '')}")
        token = _token(data, reply, None, now, self.idle_lifetime)
        if kind != "main_account_id":
            return {shop: token}
        shops = [str(int(i)) for i in _ids(data, "shop_id_list")]
        merchants = [f"merchant:{int(i)}" for i in _ids(data, "merchant_id_list")]
        if not shops and not merchants:
            raise RefreshError("Shopee's main-account answer lists no shop and no merchant")
        return dict.fromkeys([*shops, *merchants], token)

    def callback_params(self, query: Mapping[str, str]) -> tuple[str | None, str | None]:
        """`code` with `shop_id`, or with `main_account_id` (the shop segment main:<id>)."""
        if main := query.get("main_account_id"):
            return f"main:{main}", query.get("code") or None
        return query.get("shop_id") or None, query.get("code") or None

    # -- API calls --------------------------------------------------------------------------

    def apply_auth(self, shop: str, request: OutgoingRequest, token: Token, now: float) -> OutgoingRequest:
        kind, number = api_identity(shop)
        timestamp = int(now)
        path = self.api_prefix + request.path
        pairs = [("partner_id", str(self.partner_id)), ("timestamp", str(timestamp))]
        if is_public(request.path):
            pairs.append(("sign", self._sign(path, timestamp)))
        else:
            signature = self._sign(path, timestamp, token.access_token, str(number))
            pairs += [("access_token", token.access_token), (kind, str(number)), ("sign", signature)]
        return request.with_query(add_params(request.query, pairs))

    def should_inspect(self, status: int, headers: Mapping[str, str]) -> bool:
        """Small JSON-ish replies of any status: Shopee's HTTP status is not the signal."""
        media = media_type(headers)
        return fits_inspection(headers) and (
            media in ("", "text/plain") or media.endswith(("/json", "+json"))
        )

    def classify(self, reply: HttpReply) -> Verdict:
        if INVALID_TOKEN_MARK not in reply.body:  # most replies: no JSON parsed to know it
            return Verdict.OK
        data = json_object(reply.body)
        if data is not None and data.get("error") in INVALID_TOKEN_ERRORS:
            return Verdict.TOKEN_INVALID
        return Verdict.OK

    def error_members(self, problem: Mapping[str, Any]) -> dict[str, Any]:
        """Shopee's envelope (platforms.md §1.1): `error` (non-empty means failure),
        `message`; `request_id` is the problem's own."""
        return {"error": problem["code"], "message": problem["detail"]}

    # -- rate limits --------------------------------------------------------------------------

    def operation(self, method: str, path: str) -> Operation:
        return Operation(f"{method.upper()} {path}", "api", (PATH_QUOTA,))

    def published_limits(self) -> tuple[tuple[str, Quota], ...]:
        return (("each API path (a guess: Shopee publishes none)", PATH_QUOTA),)

    def throttle(self, reply: HttpReply) -> Throttle:
        """HTTP 429, or `error_rate_limit` / "too many" in the JSON whatever the status."""
        if reply.status == 429 or not reply.body:
            return gate_throttle(reply)
        body = reply.body  # decoded once, as received (HttpReply.received)
        if RATE_LIMITED_MARK not in body and b"too many" not in body.lower():  # most replies
            return NOT_THROTTLED
        data = json_object(body)
        if data is None or not data.get("error"):
            return gate_throttle(reply, False)
        error, message = str(data.get("error")), str(data.get("message") or "").lower()
        return gate_throttle(reply, error == RATE_LIMITED_ERROR or "too many" in message)


def _answer(reply: HttpReply) -> dict[str, Any]:
    data = json_object(reply.body)
    if reply.status >= 500 or data is None:
        raise RefreshError(f"Shopee token endpoint answered HTTP {reply.status}")
    return data


def _token(
    data: dict[str, Any], reply: HttpReply, current: Token | None, now: float, idle_lifetime: float
) -> Token:
    """The pair in a successful answer. A new refresh token is never dropped for a
    missing detail: it is the only copy (the old one is already spent)."""
    access = data.get("access_token")
    if not isinstance(access, str) or not access:
        raise RefreshError(f"Shopee token answer without access_token (HTTP {reply.status})")
    refresh = data.get("refresh_token") or (current.refresh_token if current else None)
    try:
        lifetime = float(data["expire_in"])
    except (KeyError, TypeError, ValueError):
        lifetime = ACCESS_LIFETIME
    return Token(
        access_token=access,
        expires_at=now + lifetime,
        obtained_at=now,
        refresh_token=str(refresh) if refresh else None,
        refresh_expires_at=now + idle_lifetime if refresh and idle_lifetime else None,
    )


def _ids(data: dict[str, Any], field: str) -> list[int]:
    values = data.get(field) or []
    return [int(v) for v in values if isinstance(v, int | str) and str(v).isdigit()]
