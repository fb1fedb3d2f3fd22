"""Value types shared by the platforms, the token provider and the proxy edge.

All frozen: a request or a token is never changed in place, a new one is made
with `dataclasses.replace`. Secrets are kept out of `repr`.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from authproxy.redact import redact_url


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


@dataclass(frozen=True)
class TokenKey:
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
    """

    access_token: str = field(repr=False)
    expires_at: float | None
    obtained_at: float
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: float | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

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
    after failed refreshes (rule 7).
    """

    token: Token | None
    version: int = 0
    status: TokenStatus = TokenStatus.OK
    failures: int = 0
    retry_at: float = 0.0
    last_refresh: float | None = None
    last_error: str = ""

    def usable(self, now: float) -> Token | None:
        if self.status is not TokenStatus.OK or self.token is None:
            return None
        return self.token if self.token.is_valid(now) else None


@dataclass(frozen=True)
class HttpRequest:
    """A request to a platform's token endpoint (full URL; some carry secrets in the query)."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    body: bytes | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"HttpRequest(method={self.method!r}, url={redact_url(self.url)!r})"


@dataclass(frozen=True)
class HttpReply:
    """A token endpoint's answer, or the classified head of an API reply."""

    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)


@dataclass(frozen=True)
class OutgoingRequest:
    """An API call on its way upstream, before and after auth is applied.

    `query` is the raw query string (percent-encoded, without `?`), kept
    byte-for-byte except for the parameters a platform owns. `body` is the
    buffered body, or None when the body is streamed (not signable/replayable).
    """

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    body: bytes | None = field(default=None, repr=False)
    streamed: bool = False

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
