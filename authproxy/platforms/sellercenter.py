"""Global Fashion Group Seller Center (ZALORA, THE ICONIC), REST API 2.0.

Client-credentials token with HTTP Basic auth at `/oauth/client-credentials`,
valid 3600 s, sent as `Authorization: Bearer`. HTTP 401 means: get a new
token and try once more (platforms.md §3); 403 is passed through.
Credentials are the app's, or the shop's own when it has them.

Rate limits are not published (platforms.md §3.2); a third-party client
throttles itself to 25 calls/s, so one bucket per shop stays below that.
"""

from __future__ import annotations

from authproxy.models import HttpReply, HttpRequest, Operation, OutgoingRequest, Quota, Token, Verdict
from authproxy.platforms.base import Platform, with_header
from authproxy.platforms.oauth_common import FORM, basic_auth, form, oauth_token
from authproxy.settings import SellerCenterApp

#: one bucket per shop for every call, under the 25/s a third-party client uses (UNVERIFIED)
SHOP_BUCKET = Operation("*", "*", (Quota(rate=20.0, burst=20),))


class SellerCenter(Platform):
    name = "sellercenter"
    credential_headers = frozenset({"authorization"})

    def __init__(self, settings: SellerCenterApp) -> None:
        super().__init__(settings.base_url, settings.refresh_idle_lifetime)
        self.settings = settings
        self.token_url = (settings.auth_url or settings.base_url).rstrip("/") + ("/oauth/client-credentials")

    def is_configured(self, shop: str) -> bool:
        return shop in self.settings.shops

    def _credentials(self, shop: str) -> tuple[str, str] | None:
        own = self.settings.shops.get(shop)
        if own and own.client_id and own.client_secret:
            return own.client_id, own.client_secret.get_secret_value()
        if self.settings.client_id and self.settings.client_secret:
            if self.settings.shops and not own:
                return None  # shops are listed and this is not one of them
            return self.settings.client_id, self.settings.client_secret.get_secret_value()
        return None

    def token_request(self, shop: str, current: Token | None, now: float) -> HttpRequest | None:
        credentials = self._credentials(shop)
        if credentials is None:
            return None
        return HttpRequest(
            method="POST",
            url=self.token_url,
            headers={
                "Authorization": basic_auth(*credentials),
                "Content-Type": FORM,
                "Accept": "application/json",
            },
            body=form({"grant_type": "client_credentials"}),
        )

    def parse_token(self, shop: str, reply: HttpReply, current: Token | None, now: float) -> Token:
        return oauth_token(reply, None, now)

    def apply_auth(self, shop: str, request: OutgoingRequest, token: Token, now: float) -> OutgoingRequest:
        return with_header(request, "Authorization", f"Bearer {token.access_token}")

    def classify(self, reply: HttpReply) -> Verdict:
        return Verdict.TOKEN_INVALID if reply.status == 401 else Verdict.OK

    def operation(self, method: str, path: str) -> Operation:
        return SHOP_BUCKET

    def published_limits(self) -> tuple[tuple[str, Quota], ...]:
        return (("every call (a guess: not published)", SHOP_BUCKET.quotas[0]),)
