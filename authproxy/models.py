"""Value types shared by the platforms, the token provider and the proxy edge.

All immutable: a request or a token is never changed in place, a new one is made
(`dataclasses.replace` for the dataclasses, `_replace` for the NamedTuples the
request path makes per call). Secrets are kept out of `repr`.
"""

from __future__ import annotations

import enum
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from authproxy.query import redact_all


def mask(secret: str | None) -> str:
    """Everything but the last 4 characters hidden (all of it when short)."""
    if not secret:
        return "-"
    if len(secret) <= 8:
        return "****"
    return "****" + secret[-4:]


class Clock(Protocol):
    """Wall-clock seconds since the epoch; injected so expiry is testable."""

    def now(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()


@dataclass
class FakeClock:
    """A clock for tests: stands still until told to move."""

    current: float = 1_700_000_000.0

    def now(self) -> float:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += seconds


class TokenKey(NamedTuple):
    """A shop of an app: what tokens, slots and rate buckets are kept under. A NamedTuple:
    made and hashed several times a request, at about half a frozen dataclass's cost."""

    app: str
    shop: str

    def __str__(self) -> str:
        return f"{self.app}/{self.shop}"


class TokenStatus(enum.StrEnum):
    OK = "ok"
    NEEDS_REAUTHORIZATION = "needs_reauthorization"


@dataclass(frozen=True)
class Token:
    """What a platform hands out: the access token and what renews it.

    `refresh_token` is whatever credential obtains the next access token:
    an OAuth2/LWA/Shopee/TikTok refresh token, or Shoptet's OAuth access token.
    `extra` holds non-secret data the platform needs on calls (shop_cipher...).
    `authorized_until` is when the seller's authorisation ends whatever we do
    (Amazon's yearly re-authorisation, a Shopee grant's expire_time), when known;
    a refresh carries it over.
    """

    access_token: str = field(repr=False)
    expires_at: float | None
    obtained_at: float
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: float | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    authorized_until: float | None = None

    def lifetime(self) -> float | None:
        if self.expires_at is None:
            return None
        return max(self.expires_at - self.obtained_at, 0.0)

    def is_valid(self, now: float, margin: float = 0.0) -> bool:
        return self.expires_at is None or now + margin < self.expires_at


@dataclass(frozen=True)
class TokenRecord:
    """A token as stored: versioned, with the shop's refresh state.

    `version` grows by one on every write; compare-and-set writes name the
    version they read. `retry_at`/`failures` carry the per-shop backoff
    after failed refreshes (rule 7). `spending` names the lock owner whose
    refresh may have spent the stored refresh credential and has not written
    the outcome yet (set before a rotating token call, cleared by the next write).
    """

    token: Token | None
    version: int = 0
    status: TokenStatus = TokenStatus.OK
    failures: int = 0
    retry_at: float = 0.0
    last_refresh: float | None = None
    last_error: str = ""
    spending: str = ""


@dataclass(frozen=True)
class HttpRequest:
    """A request to a platform's token endpoint (full URL; some carry secrets in the query)."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    body: bytes | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"HttpRequest(method={self.method!r}, url={redact_all(self.url)!r})"


#: bytes of an upstream reply's body read to classify it (a larger reply is never classified)
INSPECT_LIMIT = 64 * 1024
#: most bytes a compressed reply head or token answer is decoded to
DECODED_LIMIT = 1024 * 1024


class HttpReply(NamedTuple):
    """A token endpoint's answer, or the head of an API reply: what platforms read.

    `headers` are case-insensitive; `body` is decoded (no gzip/deflate left),
    at most DECODED_LIMIT bytes. Build one from the wire with `received`.
    (A NamedTuple, as OutgoingRequest.)
    """

    status: int
    headers: Mapping[str, str]
    body: bytes

    def __repr__(self) -> str:
        return f"HttpReply(status={self.status!r}, headers={self.headers!r})"  # no body

    @classmethod
    def received(cls, status: int, headers: Mapping[str, str], raw: bytes) -> HttpReply:
        """A reply as read off the wire; `headers` must be case-insensitive (CIMultiDict)."""
        return cls(status, headers, decoded(raw, headers.get("Content-Encoding")))


def decoded(raw: bytes, encoding: str | None) -> bytes:
    """`raw` without its gzip/deflate content coding (b"" when it is corrupt)."""
    coding = (encoding or "").strip().lower()
    if coding not in ("gzip", "x-gzip", "deflate"):
        return raw
    wbits = zlib.MAX_WBITS if coding == "deflate" else zlib.MAX_WBITS | 32  # | 32: gzip or zlib header
    try:
        return zlib.decompressobj(wbits).decompress(raw, DECODED_LIMIT)
    except zlib.error:
        return b""


class OutgoingRequest(NamedTuple):
    """An API call on its way upstream, before and after auth is applied.

    `query` is the raw query string (percent-encoded, without `?`), kept
    byte-for-byte except for the parameters a platform owns. `body` is the
    buffered body, or None when the body is streamed (not signable/replayable).

    A NamedTuple rather than a frozen dataclass: every request makes two or more, and a
    frozen dataclass's __init__ (object.__setattr__ per field) costs 1.1-1.4 us against 0.5.
    """

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None = None
    streamed: bool = False

    def __repr__(self) -> str:  # no headers (credentials), no body
        return (
            f"OutgoingRequest(method={self.method!r}, path={self.path!r}, query={self.query!r}, "
            f"streamed={self.streamed!r})"
        )

    def with_query(self, query: str) -> OutgoingRequest:
        """The request with this query string (a signed platform's every call makes one;
        built positionally: _replace costs twice as much)."""
        return OutgoingRequest(self.method, self.path, query, self.headers, self.body, self.streamed)

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def content_type(self) -> str:
        value = self.header("Content-Type") or ""
        return value.split(";", 1)[0].strip().lower()


class Verdict(enum.Enum):
    """How a platform reads an upstream reply."""

    OK = "ok"
    TOKEN_INVALID = "token_invalid"


# -- rate limits (what platforms declare and what their replies say) ----------------------


class Scope(enum.StrEnum):
    """Who shares a quota: one shop's calls, or every shop of the app."""

    SHOP = "shop"
    APP = "app"


class Quota(NamedTuple):
    """A platform limit: `rate` calls per second, bursts of up to `burst` calls."""

    rate: float
    burst: int
    scope: Scope = Scope.SHOP


class Operation(NamedTuple):
    """What one call counts against: `name` keys its buckets (one per scope),
    `label` is a bounded name for metrics, `quotas` the platform's defaults.
    (NamedTuples, as OutgoingRequest: made and hashed per call, a memo's key.)"""

    name: str
    label: str
    quotas: tuple[Quota, ...] = ()


@dataclass(frozen=True)
class Throttle:
    """What an upstream reply says about the platform's limits.

    `throttled`: the platform refused the call at its gate (not processed).
    `retry_in` (seconds) or `retry_at` (Unix time): the wait it asks for.
    `rate`: the per-shop rate it announced for this operation (Amazon).
    `filling`: (used, capacity) of its bucket (Shoptet)."""

    throttled: bool = False
    retry_in: float | None = None
    retry_at: float | None = None
    rate: float | None = None
    filling: tuple[int, int] | None = None


NOT_THROTTLED = Throttle()
