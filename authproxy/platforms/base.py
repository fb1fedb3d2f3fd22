"""The one interface every platform implements.

A platform is pure: it builds token-endpoint requests, parses their answers
into `Token`s, applies auth to an outgoing API request, and reads an upstream
reply's head to tell an invalid token from anything else. `now` is passed in;
nothing here does I/O.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from authproxy.models import (
    INSPECT_LIMIT,
    HttpReply,
    HttpRequest,
    Operation,
    OutgoingRequest,
    Quota,
    Throttle,
    Token,
    Verdict,
)
from authproxy.platforms.throttling import gate_throttle
from authproxy.query import OAUTH_SECRETS

#: what a call of a platform without quotas counts against: one operation per shop
ANY_OPERATION = Operation("*", "*")


class Platform(abc.ABC):
    """Auth for one configured app. Subclasses are one module each."""

    name: str = ""
    #: query parameters the platform owns: client-supplied ones are replaced
    owned_query: frozenset[str] = frozenset()
    #: query parameters whose values never reach a log line (lower case)
    secret_query: frozenset[str] = OAUTH_SECRETS
    #: inbound headers that carry credentials (lower case), stripped before auth
    credential_headers: frozenset[str] = frozenset()
    #: most concurrent upstream calls per token (None: unlimited)
    concurrency_limit: int | None = None
    #: seconds a shop's operation rests after a throttled reply that names no wait
    throttle_penalty: float = 1.0
    #: a refresh may spend the refresh credential (single use, rotating): a lost answer locks the shop out
    single_use_refresh: bool = False
    #: seconds an unused refresh credential lives before the platform lets it die (0: it never
    #: dies of idleness); restarted by each refresh. An app's `refresh_idle_lifetime` overrides it.
    default_idle_lifetime: float = 0.0

    def __init__(self, base_url: str, idle_lifetime: float | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.idle_lifetime = self.default_idle_lifetime if idle_lifetime is None else idle_lifetime

    # -- tokens -----------------------------------------------------------------------

    @abc.abstractmethod
    def token_request(self, shop: str, current: Token | None, now: float) -> HttpRequest | None:
        """The request that gets a new token, or None when nothing can get one
        (no stored refresh credential and none configured)."""

    @abc.abstractmethod
    def parse_token(self, shop: str, reply: HttpReply, current: Token | None, now: float) -> Token:
        """The token in a token-endpoint reply.

        Raises RefreshRejected when the grant is refused for good (invalid_grant)
        and RefreshError for anything that may work later."""

    def is_configured(self, shop: str) -> bool:
        """Whether the config names this shop (else it needs a stored token)."""
        return False

    def authorization_ends(self, token: Token) -> float | None:
        """When the seller's authorisation ends whatever we do (a horizon: warned about,
        never refreshed past), or None when the platform has none or it is not known.
        Never a refresh credential's *idle* expiry, which each refresh moves on."""
        return token.authorized_until

    # -- seller authorization (authorize-url / authorize --code) --------------------------

    def authorize_url(self, redirect: str | None, state: str, now: float) -> str:
        """The link a seller opens to grant this app access to their shop."""
        raise NotImplementedError(f"{self.name} has no seller consent link")

    def code_request(self, shop: str, code: str, redirect: str | None, now: float) -> HttpRequest:
        """The request that exchanges an authorization code for the shop's first token."""
        raise NotImplementedError(f"{self.name} has no authorization-code exchange")

    def parse_code_reply(self, shop: str, reply: HttpReply, now: float) -> dict[str, Token]:
        """The token(s) a code exchange returned, by shop (one code may cover several)."""
        return {shop: self.parse_token(shop, reply, None, now)}

    def callback_params(self, query: Mapping[str, str]) -> tuple[str | None, str | None]:
        """(shop, code) in the query of the platform's redirect to the OAuth callback.

        Default, RFC 6749 §4.1.2: the code is `code`, absent when `error` is set,
        and the redirect names no shop (the callback takes it from the state)."""
        if query.get("error"):
            return None, None
        return None, query.get("code") or None

    # -- API calls --------------------------------------------------------------------

    @abc.abstractmethod
    def apply_auth(self, shop: str, request: OutgoingRequest, token: Token, now: float) -> OutgoingRequest:
        """The request with the platform's credentials (headers / signed query)."""

    def needs_buffered_body(self, request: OutgoingRequest) -> bool:
        """True when auth covers the body bytes (a streamed body is refused)."""
        return False

    def should_inspect(self, status: int, headers: Mapping[str, str]) -> bool:
        """Whether a reply's head (<= INSPECT_LIMIT bytes of body) must be read to
        classify it. `headers` are case-insensitive."""
        return status >= 400

    @abc.abstractmethod
    def classify(self, reply: HttpReply) -> Verdict:
        """TOKEN_INVALID when the reply says: refresh the token and try once more."""

    # -- what a shop needs beyond its token (TikTok's shop_cipher) ----------------------------

    def lacks_details(self, shop: str, token: Token) -> bool:
        """Whether calls need something about the shop that neither the config nor the stored
        token holds yet, and that an API call can tell (details_request). Default: never."""
        return False

    def details_request(self, shop: str, token: Token, now: float) -> OutgoingRequest:
        """The signed API call that tells the shop's details (sent to `base_url`)."""
        raise NotImplementedError(f"{self.name} needs no shop details")

    def parse_details(self, shop: str, reply: HttpReply) -> dict[str, str] | None:
        """What to keep in the token's `extra` from the reply to details_request (non-secret;
        {} when the reply says there is nothing to keep), or None when it is no usable answer."""
        return None

    # -- errors made by the proxy -------------------------------------------------------------

    def error_members(self, problem: Mapping[str, Any]) -> dict[str, Any]:
        """Members in the platform's own error shape, added to the proxy's problem+json
        bodies on this app's routes, so that clients written for the platform (SDKs)
        see an error and its message. `problem` is the problem+json object; its members
        are never replaced (errors.problem_bytes). Default: none."""
        return {}

    # -- rate limits ---------------------------------------------------------------------

    def operation(self, method: str, path: str) -> Operation:
        """What a call counts against, with the platform's default quotas.

        Default: one operation per shop and no quota of its own, so only a
        throttled reply (a penalty) holds the shop's calls back."""
        return ANY_OPERATION

    def published_limits(self) -> tuple[tuple[str, Quota], ...]:
        """The default quotas, described for `authproxy limits show`."""
        return ()

    def throttle(self, reply: HttpReply) -> Throttle:
        """What a reply (status, headers, the head of its body when inspected)
        says about the limits. Default: HTTP 429 and its Retry-After."""
        return gate_throttle(reply)


def with_header(request: OutgoingRequest, name: str, value: str) -> OutgoingRequest:
    """The request with `name` set to `value` (any earlier value dropped)."""
    lname = name.lower()
    kept = [header for header in request.headers if header[0].lower() != lname]
    method, path, query, _, body, streamed = request
    return OutgoingRequest(method, path, query, (*kept, (name, value)), body, streamed)


def media_type(headers: Mapping[str, str]) -> str:
    """The Content-Type without parameters, lower case ("" when absent)."""
    return (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()


def fits_inspection(headers: Mapping[str, str]) -> bool:
    """False when the reply announces a body larger than the proxy reads to classify."""
    length = (headers.get("Content-Length") or "").strip()
    return not (length.isdigit() and int(length) > INSPECT_LIMIT)
