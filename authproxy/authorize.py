"""Seller authorization: consent links, signed callback states, code exchange.

`exchange_code` is the one place an authorization code becomes stored
tokens; the `authorize` command and the OAuth callback route both use it.
An explicit authorization replaces whatever is stored (ANY_VERSION), a
`needs_reauthorization` mark included: that is what it is for.

The callback's `state` is stateless: base64url(JSON {app, shop, exp, nonce})
"." base64url(HMAC-SHA256(server.state_secret, payload)). The callback
checks the MAC (constant time), the app and the expiry; nothing is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass

import aiohttp

from authproxy.errors import BadState
from authproxy.models import Clock, SystemClock, Token, TokenKey, TokenRecord
from authproxy.platforms import build_platform
from authproxy.settings import ServerSettings, Settings
from authproxy.store import ANY_VERSION, TokenStore
from authproxy.token_endpoint import call_token_endpoint, put_persistently

log = logging.getLogger("authproxy.authorize")
CALLBACK_PATH = "/_authproxy/oauth/{app}/callback"
#: how long a signed state (and so a consent link) stays usable
STATE_LIFETIME = 20 * 60
STATE_CONTEXT = b"authproxy oauth state v1\n"


# -- the callback's state (pure) ------------------------------------------------------------


@dataclass(frozen=True)
class StateClaims:
    app: str
    shop: str | None
    expires_at: float


def callback_url(server: ServerSettings, app: str) -> str | None:
    """Where the platform sends the seller back, when the callback is on."""
    if not server.public_url:
        return None
    return server.public_url.rstrip("/") + CALLBACK_PATH.format(app=app)


def sign_state(secret: str, app: str, shop: str | None, now: float, lifetime: float = STATE_LIFETIME) -> str:
    payload = {"app": app, "shop": shop, "exp": int(now + lifetime), "nonce": secrets.token_hex(8)}
    body = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return body + "." + _b64(_mac(secret, body))


def verify_state(secret: str, state: str | None, app: str, now: float) -> StateClaims:
    """The claims of a state this proxy signed for `app`, still valid; else BadState."""
    if not state:
        raise BadState("the redirect carries no state")
    body, _, mac = state.partition(".")
    try:
        given = _unb64(mac)
    except ValueError:
        given = b""
    if not hmac.compare_digest(given, _mac(secret, body)):
        raise BadState("the state was not issued by this proxy (or server.state_secret changed)")
    data = json.loads(_unb64(body))  # signed by us: well formed
    if data.get("app") != app:
        raise BadState(f"the state was issued for another app ({data.get('app')!r})")
    expires_at = float(data["exp"])
    if now >= expires_at:
        raise BadState(f"the state expired {int(now - expires_at)}s ago; create a new link")
    shop = data.get("shop")
    return StateClaims(app, str(shop) if shop else None, expires_at)


def _mac(secret: str, body: str) -> bytes:
    return hmac.new(secret.encode(), STATE_CONTEXT + body.encode(), hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except ValueError:  # binascii.Error, or a non-ASCII character
        raise ValueError("not base64url") from None


# -- the code exchange (I/O) ----------------------------------------------------------------


async def exchange_code(
    settings: Settings,
    store: TokenStore,
    app: str,
    shop: str,
    code: str,
    redirect: str | None,
    *,
    clock: Clock | None = None,
) -> dict[str, Token]:
    """Exchange `code` for the shop's token(s) and store each one, fresh.

    Raises RefreshRejected (the platform refused the code), RefreshError (the
    token endpoint failed), NotImplementedError (the platform has no code
    exchange) and StoreUnavailable."""
    the_clock = clock or SystemClock()
    platform = build_platform(settings.apps[app])
    request = platform.code_request(shop, code, redirect, the_clock.now())
    async with aiohttp.ClientSession(trust_env=False) as session:
        reply = await call_token_endpoint(session, request, settings.server.token_timeout)
    tokens = platform.parse_code_reply(shop, reply, the_clock.now())
    for name, token in tokens.items():
        record = TokenRecord(token=token, last_refresh=token.obtained_at)
        # whatever is stored is replaced: a new grant is what a needs_reauthorization mark waits for
        await put_persistently(store, TokenKey(app, name), record, ANY_VERSION)
        log.info("authorized %s/%s", app, name, extra={"fields": {"app": app, "shop": name}})
    return tokens
