"""What a request gets when the policy's decision leaves it no token to send (pure)."""

from __future__ import annotations

import math

from authproxy.errors import NeedsReauthorization, ProxyError, RefreshFailed, UnknownShop
from authproxy.models import Token, TokenKey, TokenRecord, TokenStatus
from authproxy.platforms import Platform
from authproxy.tokens.policy import Action, Decision


def settled(key: TokenKey, record: TokenRecord | None, decision: Decision, now: float) -> Token:
    """The token a decision other than REFRESH_NOW gives, or its error."""
    if decision.token is not None:
        return decision.token
    if decision.action is Action.COOL_DOWN:
        raise cooling(key, record, decision.until, now)
    raise must_reauthorize(key, record)


def must_reauthorize(key: TokenKey, record: TokenRecord | None) -> NeedsReauthorization:
    reason = f": {record.last_error}" if record is not None and record.last_error else ""
    return NeedsReauthorization(f"shop {key.shop!r} of {key.app!r} must be authorized again{reason}")


def cooling(key: TokenKey, record: TokenRecord | None, until: float, now: float) -> RefreshFailed:
    wait = math.ceil(until - now)
    error = record.last_error if record is not None else ""
    return RefreshFailed(f"refreshing {key} failed ({error}); next attempt in {wait}s", retry_after=wait)


def no_token(platform: Platform, key: TokenKey, record: TokenRecord | None) -> ProxyError:
    """Nothing stored can be refreshed and nothing configured either."""
    if record is not None and record.status is TokenStatus.NEEDS_REAUTHORIZATION:
        return must_reauthorize(key, record)
    if platform.is_configured(key.shop):
        return NeedsReauthorization(f"no token is stored for shop {key.shop!r} of {key.app!r}")
    return UnknownShop(f"shop {key.shop!r} of app {key.app!r} has no token and no config")
