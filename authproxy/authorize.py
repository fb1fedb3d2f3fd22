"""Seller authorization: the OAuth callback's URL and its signed state (pure).

The code exchange itself is ShopTokens.authorize (tokens/provider.py), used
by the `authorize` command and the OAuth callback route alike.

The callback's `state` is stateless: base64url(JSON {app, shop, exp, nonce})
"." base64url(HMAC-SHA256(server.state_secret, payload)). The callback
checks the MAC (constant time), the app and the expiry; nothing is stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from authproxy.errors import BadState
from authproxy.settings import ServerSettings

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
