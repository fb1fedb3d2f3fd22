"""The one interface every platform implements.

A platform is pure: it builds token-endpoint requests, parses their answers
into `Token`s, applies auth to an outgoing API request, and reads an upstream
reply's head to tell an invalid token from anything else. `now` is passed in;
nothing here does I/O.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping

from authproxy.models import HttpReply, HttpRequest, OutgoingRequest, Token, Verdict


class Platform(abc.ABC):
    """Auth for one configured app. Subclasses are one module each."""

    name: str = ""
    #: query parameters the platform owns: client-supplied ones are replaced
    owned_query: frozenset[str] = frozenset()
    #: inbound headers that carry credentials (lower case), stripped before auth
    credential_headers: frozenset[str] = frozenset()
    #: most concurrent upstream calls per token (None: unlimited)
    concurrency_limit: int | None = None

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

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
        """Whether a reply's head (<= 64 KiB of body) must be read to classify it."""
        return status >= 400

    @abc.abstractmethod
    def classify(self, reply: HttpReply) -> Verdict:
        """TOKEN_INVALID when the reply says: refresh the token and try once more."""


def with_header(request: OutgoingRequest, name: str, value: str) -> OutgoingRequest:
    """The request with `name` set to `value` (any earlier value dropped)."""
    lname = name.lower()
    kept = tuple((k, v) for k, v in request.headers if k.lower() != lname)
    return OutgoingRequest(
        method=request.method,
        path=request.path,
        query=request.query,
        headers=(*kept, (name, value)),
        body=request.body,
        streamed=request.streamed,
    )
