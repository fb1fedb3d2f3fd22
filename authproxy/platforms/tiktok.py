"""TikTok Shop Partner API (versions 202309+), platforms.md §4.

Every call carries the header `x-tts-access-token` and the query parameters
`app_key`, `timestamp` (10-digit seconds) and `sign`, plus `shop_cipher` on
shop-scoped endpoints. The sign is an HMAC-SHA256 over the path, the sorted
query and the raw body bytes (§4.2), so the proxy signs exactly the bytes it
forwards and never re-serializes JSON; a body too large to buffer cannot be
signed (413). Tokens come from `auth_url` (`/api/v2/token/get` and
`/api/v2/token/refresh`, GET with the app secret in the query, not signed);
their expiry fields are absolute Unix timestamps.

`shop_cipher` belongs to the proxy when it knows one for the shop (config
`[apps.X.shops.Y] shop_cipher`, else the stored token's `extra["shop_cipher"]`):
the client's is then replaced, and none is sent on the endpoints listed in
NO_SHOP_CIPHER. A shop without a known cipher keeps the client's as sent.
The stored cipher comes from Get Authorized Shops (`details_request`), asked
after a code exchange and whenever a shop's token has none: the seller's only
shop, or the one whose id, code, name or cipher is the shop segment. The
shops seen are kept too (`authorized_shops`), so a seller whose shops match
none is not asked again; the config's cipher is then the way.

The authorisation ends at `refresh_token_expire_in` (absolute: the duration the
seller granted, platforms.md §8.1), which is its horizon; an unused refresh
token does not die before it, so no keep-alive is needed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlencode

from authproxy.errors import ConfigError, RefreshError, RefreshRejected
from authproxy.models import (
    HttpReply,
    HttpRequest,
    Operation,
    OutgoingRequest,
    Quota,
    Throttle,
    Token,
    Verdict,
)
from authproxy.platforms.base import Platform, fits_inspection, media_type, with_header
from authproxy.platforms.oauth_common import json_object
from authproxy.platforms.signing import HmacSha256
from authproxy.platforms.throttling import gate_throttle
from authproxy.query import OAUTH_SECRETS, add_params, decoded_params, drop_params
from authproxy.settings import TikTokApp

API_URL = "https://open-api.tiktokglobalshop.com"
AUTH_URL = "https://auth.tiktok-shops.com"
#: ROW consent page; US sellers use https://services.tiktokshops.us/open/authorize (`authorize_url`)
AUTHORIZE_URL = "https://services.tiktokshop.com/open/authorize"
TOKEN_HEADER = "x-tts-access-token"
MULTIPART = "multipart/form-data"
#: never signed (§4.2); `access_token` is the legacy query form of the token
UNSIGNED = frozenset({"sign", "access_token"})

#: Endpoints that refuse `shop_cipher` (36009004 "Unexpected identifier"): the
#: EcomPHP SDK's strip list. (method or None for any, path prefix pattern)
NO_SHOP_CIPHER: tuple[tuple[str | None, re.Pattern[str]], ...] = (
    (None, re.compile(r"^/(authorization|seller)/\d{6}/")),
    (None, re.compile(r"^/product/\d{6}/(global_products|files/upload|images/upload)")),
    ("POST", re.compile(r"^/product/\d{6}/brands")),
)

#: 105002 "Expired credentials": refresh and replay once
EXPIRED = 105002
#: 36009004 is overloaded; only the access-token-header variant means a bad token
OVERLOADED = 36009004
TOKEN_HEADER_INVALID = re.compile(r"(x-tts-access-token|access_token)\W*\s*header\s+is\s+invalid", re.I)
#: token-endpoint codes that mean the refresh token (or auth code) is dead for good
#: (third-party, observed live: EcomPHP PR #15 and others; not in the published tables)
DEAD_GRANT = {
    36004001: "refresh token expired",  # "rt has expired"
    36004005: "refresh token unknown",  # "can not find related auth record"
    36004004: "authorization code invalid",  # token/get with a used or bad auth_code
}
#: non-secret token-answer fields kept in `Token.extra` (shown by `tokens show`)
KEPT_FIELDS = ("open_id", "seller_name", "seller_base_region")
#: Get Authorized Shops: the seller's shops, `data.shops[]` with `cipher`, `code`, `id`, `name`,
#: `region`, `seller_type` (platforms.md §4.1)
SHOPS_PATH = "/authorization/202309/shops"
#: a listed shop's fields kept in Token.extra (the cipher is sent on calls; the rest is shown)
SHOP_FIELDS = {"cipher": "shop_cipher", "id": "shop_id", "name": "shop_name", "region": "shop_region"}
#: in Token.extra once the seller's shops were looked up: "<id> (<region>), ..."
LOOKED_UP = "authorized_shops"
#: an expiry field below this is a duration, not a Unix timestamp (defensive)
ABSOLUTE_AFTER = 1_000_000_000
#: "50 QPS per API, counted per app+shop" (platforms.md §4.1). TikTok publishes no
#: burst: a fifth of a second's worth leaves room for jitter on the way there
API_QUOTA = Quota(rate=50.0, burst=10)
#: 429 "Too many requests" (platforms.md §8.2)
THROTTLED = 36009002
ID_SEGMENT = re.compile(r"^[0-9]+$")


def api_of(method: str, path: str) -> str:
    """The API a call counts against: method and path, ids after the version as {id}.

    `/product/202309/products/1729592969712207008` -> `GET /product/202309/products/{id}`."""
    parts = path.split("/")
    named = [p if i <= 2 or not ID_SEGMENT.match(p) else "{id}" for i, p in enumerate(parts)]
    return f"{method.upper()} {'/'.join(named)}"


def string_to_sign(secret: str, path: str, params: Iterable[tuple[str, str]], body: bytes | None) -> bytes:
    """secret + path + sorted(key + value) + body + secret (§4.2), as bytes.

    A key that repeats is signed once, with its first value (the official Go
    sample's `queries.Get`). `body` is None when it must not be signed.
    """
    first: dict[str, str] = {}
    for key, value in params:
        if key not in UNSIGNED:
            first.setdefault(key, value)
    text = path + "".join(key + first[key] for key in sorted(first))
    return secret.encode() + text.encode() + (body or b"") + secret.encode()


def sign(secret: str, path: str, params: Iterable[tuple[str, str]], body: bytes | None) -> str:
    """Lowercase hex HMAC-SHA256 of `string_to_sign`, keyed with the app secret."""
    return HmacSha256(secret.encode()).hexdigest(string_to_sign(secret, path, params, body))


def takes_shop_cipher(method: str, path: str) -> bool:
    """False on the endpoints that answer 36009004 when given a shop_cipher."""
    return not any(
        (only is None or only == method.upper()) and pattern.match(path) for only, pattern in NO_SHOP_CIPHER
    )


def pick_shop(segment: str, shops: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The seller's shop a proxy shop segment means: the only one, or the one it names."""
    if len(shops) == 1:
        return shops[0]
    named = [s for s in shops if segment in {str(s.get(field)) for field in ("id", "code", "name", "cipher")}]
    return named[0] if len(named) == 1 else None


def signed_body(request: OutgoingRequest) -> bytes | None:
    """The body bytes the sign covers: all of them, unless multipart (or absent)."""
    if request.content_type() == MULTIPART or not request.body:
        return None
    return request.body


class TikTok(Platform):
    name = "tiktok"
    owned_query = frozenset({"app_key", "timestamp", "sign", "access_token"})
    secret_query = OAUTH_SECRETS | {"sign", "app_secret", "auth_code"}
    single_use_refresh = True  # rotation UNVERIFIED: treated as single use
    credential_headers = frozenset({TOKEN_HEADER, "access_token", "access-token"})

    def __init__(self, settings: TikTokApp) -> None:
        super().__init__(settings.base_url or API_URL, settings.refresh_idle_lifetime)
        self.settings = settings
        self.auth_url = (settings.auth_url or AUTH_URL).rstrip("/")
        self._signer = HmacSha256(self._secret().encode())  # keyed once: every call signs

    def is_configured(self, shop: str) -> bool:
        return shop in self.settings.shops

    def authorization_ends(self, token: Token) -> float | None:
        """`refresh_token_expire_in`: "equivalent to the authorization duration"."""
        return token.refresh_expires_at or token.authorized_until

    # -- tokens ---------------------------------------------------------------------------

    def _token_url(self, path: str, fields: dict[str, str]) -> HttpRequest:
        query = urlencode({"app_key": self.settings.app_key, "app_secret": self._secret(), **fields})
        return HttpRequest("GET", f"{self.auth_url}{path}?{query}", {"Accept": "application/json"})

    def _secret(self) -> str:
        return self.settings.app_secret.get_secret_value()

    def token_request(self, shop: str, current: Token | None, now: float) -> HttpRequest | None:
        # A stored refresh token wins: a rotated one supersedes the configured seed.
        refresh = current.refresh_token if current else None
        if refresh is None and (seed := self.settings.shops.get(shop)) and seed.refresh_token:
            refresh = seed.refresh_token.get_secret_value()
        if not refresh:
            return None
        return self._token_url(
            "/api/v2/token/refresh", {"refresh_token": refresh, "grant_type": "refresh_token"}
        )

    def parse_token(self, shop: str, reply: HttpReply, current: Token | None, now: float) -> Token:
        data = _token_data(reply)
        expires = _absolute(data.get("access_token_expire_in"), now)
        refresh = data.get("refresh_token") or (current.refresh_token if current else None)
        refresh_expires = _absolute(data.get("refresh_token_expire_in"), now)
        if refresh_expires is None and current is not None and not data.get("refresh_token"):
            refresh_expires = current.refresh_expires_at
        extra = dict(current.extra) if current else {}
        extra.update({key: str(data[key]) for key in KEPT_FIELDS if data.get(key)})
        return Token(
            access_token=str(data["access_token"]),
            expires_at=expires,
            obtained_at=now,
            refresh_token=str(refresh) if refresh else None,
            refresh_expires_at=refresh_expires,
            extra=extra,
        )

    # -- seller authorization ----------------------------------------------------------------

    def authorize_url(self, redirect: str | None, state: str, now: float) -> str:
        """The consent link; TikTok redirects to the URL set in Partner Center (`redirect` unused)."""
        if not self.settings.service_id:
            raise ConfigError("tiktok: set service_id (Partner Center > App & Service) for the consent link")
        base = self.settings.authorize_url or AUTHORIZE_URL
        return f"{base}?service_id={quote(self.settings.service_id, safe='')}&state={quote(state, safe='')}"

    def code_request(self, shop: str, code: str, redirect: str | None, now: float) -> HttpRequest:
        return self._token_url("/api/v2/token/get", {"auth_code": code, "grant_type": "authorized_code"})

    def callback_params(self, query: Mapping[str, str]) -> tuple[str | None, str | None]:
        """`code` (the literal "null" when the seller declined); the shop comes from the state."""
        code = query.get("code")
        if query.get("error") or code in (None, "", "null"):
            return None, None
        return None, code

    # -- API calls ----------------------------------------------------------------------------

    def shop_cipher(self, shop: str, token: Token) -> str | None:
        """The shop's cipher: the config's, else the one stored with the token."""
        configured = self.settings.shops.get(shop)
        if configured is not None and configured.shop_cipher:
            return configured.shop_cipher
        return token.extra.get("shop_cipher") or None

    def lacks_details(self, shop: str, token: Token) -> bool:
        """No cipher configured, none stored and the seller's shops not looked up yet."""
        configured = self.settings.shops.get(shop)
        if configured is not None and configured.shop_cipher:
            return False
        return LOOKED_UP not in token.extra and not token.extra.get("shop_cipher")

    def details_request(self, shop: str, token: Token, now: float) -> OutgoingRequest:
        """Get Authorized Shops, signed with the shop's token (it takes no shop_cipher)."""
        asked = OutgoingRequest("GET", SHOPS_PATH, "", (("Accept", "application/json"),))
        return self.apply_auth(shop, asked, token, now)

    def parse_details(self, shop: str, reply: HttpReply) -> dict[str, str] | None:
        data = json_object(reply.body)
        if reply.status != 200 or data is None or _code(data.get("code")) != 0:
            return None
        found = data.get("data")
        shops = found.get("shops") if isinstance(found, dict) else None
        if not isinstance(shops, list):
            return None
        listed = [s for s in shops if isinstance(s, dict) and s.get("cipher")]
        details = {LOOKED_UP: ", ".join(f"{s.get('id')} ({s.get('region')})" for s in listed)}
        chosen = pick_shop(shop, listed)
        if chosen is not None:
            details.update({name: str(chosen[key]) for key, name in SHOP_FIELDS.items() if chosen.get(key)})
        return details

    def apply_auth(self, shop: str, request: OutgoingRequest, token: Token, now: float) -> OutgoingRequest:
        path = unquote(request.path)  # the path the server sees (and signs), decoded
        query = drop_params(request.query, self.owned_query)
        cipher = self.shop_cipher(shop, token)
        pairs = [("app_key", self.settings.app_key), ("timestamp", str(int(now)))]
        if cipher is not None:
            query = drop_params(query, {"shop_cipher"})
            if takes_shop_cipher(request.method, path):
                pairs.append(("shop_cipher", cipher))
        query = add_params(query, pairs)
        message = string_to_sign(self._secret(), path, decoded_params(query), signed_body(request))
        signature = self._signer.hexdigest(message)
        signed = with_header(request, TOKEN_HEADER, token.access_token)
        return signed.with_query(add_params(query, [("sign", signature)]))

    def needs_buffered_body(self, request: OutgoingRequest) -> bool:
        return request.content_type() != MULTIPART

    def should_inspect(self, status: int, headers: Mapping[str, str]) -> bool:
        """JSON replies of any status: TikTok's HTTP status for 105002 is unknown."""
        media = media_type(headers)
        return fits_inspection(headers) and (media == "application/json" or media.endswith("+json"))

    def classify(self, reply: HttpReply) -> Verdict:
        body = reply.body
        if b"105002" not in body and b"36009004" not in body:
            return Verdict.OK  # most replies: no JSON parsing on the hot path
        data = json_object(body)
        if data is None:
            return Verdict.OK
        code = _code(data.get("code"))
        if code == EXPIRED:
            return Verdict.TOKEN_INVALID
        if code == OVERLOADED and TOKEN_HEADER_INVALID.search(str(data.get("message", ""))):
            return Verdict.TOKEN_INVALID
        return Verdict.OK

    def error_members(self, problem: Mapping[str, Any]) -> dict[str, Any]:
        """TikTok's envelope (platforms.md §4.1) is `code`, `message`, `request_id`: the
        problem already has `code` (a string, never 0: a client reads it as failed, and
        an SDK wanting an integer falls back to the HTTP status) and `request_id`."""
        return {"message": problem["detail"]}

    # -- rate limits ----------------------------------------------------------------------------

    def operation(self, method: str, path: str) -> Operation:
        return Operation(api_of(method, path), "api", (API_QUOTA,))

    def published_limits(self) -> tuple[tuple[str, Quota], ...]:
        return (("each API (method and path)", API_QUOTA),)

    def throttle(self, reply: HttpReply) -> Throttle:
        """HTTP 429, or code 36009002 whatever the status (no wait hint: the penalty applies)."""
        if reply.status == 429:
            return gate_throttle(reply)
        body = reply.body  # decoded once, as received (HttpReply.received)
        if b"36009002" not in body:
            return gate_throttle(reply, False)
        data = json_object(body)
        return gate_throttle(reply, data is not None and _code(data.get("code")) == THROTTLED)


def _code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _token_data(reply: HttpReply) -> dict[str, Any]:
    """`data` of a successful token answer; RefreshRejected/RefreshError otherwise.

    Only codes known to mean a dead grant are RefreshRejected (which marks the
    shop for re-authorization and stops its traffic). Any other non-zero code
    is RefreshError: retried with backoff while the access token lasts, since a
    wrong "rejected" costs an outage and a wrong "failed" only a retried call.
    """
    body = json_object(reply.body)
    if reply.status >= 500 or body is None:
        raise RefreshError(f"token endpoint answered HTTP {reply.status}")
    code = _code(body.get("code"))
    if code in DEAD_GRANT:
        raise RefreshRejected(f"token endpoint refused the grant: {DEAD_GRANT[code]} (code {code})")
    data = body.get("data")
    if code != 0 or not isinstance(data, dict) or not data.get("access_token"):
        raise RefreshError(f"token endpoint error: code {code} (HTTP {reply.status})")
    return data


def _absolute(value: Any, now: float) -> float | None:
    """An expiry field as a Unix time: TikTok sends absolute timestamps."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if number >= ABSOLUTE_AFTER else now + number
