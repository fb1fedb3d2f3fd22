"""The token policy, stated once: what to do with a shop's stored record now (pure).

    decide(record, now, timing) ->
        USE            the token is good: send it
        REFRESH_SOON   good, but past its refresh point: send it, refresh in the background
        REFRESH_NOW    nothing usable: refresh before sending
        REAUTHORIZE    the platform refused the refresh credential: a person must act
        COOL_DOWN      refreshing failed lately: not before `until` (rule 7)

A still-valid token is always used: a shop that needs re-authorization or is
cooling down keeps working until its access token runs out. The refresh
point is the expiry minus a fraction of the lifetime (`refresh_before`, at
most `refresh_before_max` seconds), stretched by a per-process `jitter` in
[1, 1.5] so replicas do not all refresh at once (rule 8). `status` is the
same decision as `tokens list` shows it.

Keeping an idle shop authorised (keep-alive), also pure:

    idle_refresh_at(record, upkeep)         when keep-alive refreshes it (None: never)
    next_check(record, now, upkeep, ends)   when keep-alive next looks at it: that
                                            refresh or its next expiry warning
    access_ends(record, now, upkeep, ends)  when its access ends unless someone acts, and why

A refresh credential that dies unused after `idle_lifetime` seconds (Shopee:
30 days from its issue) is refreshed once the pair is `fraction` x
`idle_lifetime` old, times a spread in [0.8, 1] drawn from the shop and the
pair's issue time: shops spread out, and every replica computes the same time
for the same record (so the double check under the lock agrees with the
claim). A failed refresh is not retried before the record's `retry_at`.
"""

from __future__ import annotations

import enum
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from authproxy.horizon import WARN_BEFORE, next_warning_at
from authproxy.models import Token, TokenRecord, TokenStatus
from authproxy.settings import ServerSettings


class Action(enum.Enum):
    USE = "use"
    REFRESH_SOON = "refresh_soon"
    REFRESH_NOW = "refresh_now"
    REAUTHORIZE = "reauthorize"
    COOL_DOWN = "cool_down"


@dataclass(frozen=True)
class Decision:
    action: Action
    token: Token | None = None  # the token to send (USE, REFRESH_SOON)
    until: float = 0.0  # COOL_DOWN: when the next refresh may be tried


@dataclass(frozen=True)
class Timing:
    """When to refresh ahead of expiry (from [server])."""

    refresh_before: float = 0.1
    refresh_before_max: float = 300.0

    @classmethod
    def of(cls, server: ServerSettings) -> Timing:
        return cls(server.refresh_before, server.refresh_before_max)


class Status(enum.StrEnum):
    """What `tokens list` shows for a record."""

    OK = "ok"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    COOLING_DOWN = "cooling_down"
    NEEDS_REAUTHORIZATION = "needs_reauthorization"


def refresh_point(token: Token, timing: Timing, jitter: float = 1.0) -> float:
    """When to start refreshing `token` (infinity for a token that never expires)."""
    if token.expires_at is None:
        return math.inf
    lifetime = token.lifetime() or 0.0
    return token.expires_at - min(lifetime * timing.refresh_before, timing.refresh_before_max) * jitter


def decide(
    record: TokenRecord | None,
    now: float,
    timing: Timing,
    *,
    jitter: float = 1.0,
    rejected: str | None = None,
) -> Decision:
    """What to do now. `rejected`: an access token the platform just refused,
    which no longer counts as valid even if it is the stored one (rule 9)."""
    token = record.token if record is not None else None
    usable = token is not None and token.access_token != rejected and token.is_valid(now)
    if record is not None and token is not None and usable:
        settled = record.status is TokenStatus.NEEDS_REAUTHORIZATION or now < record.retry_at
        if not settled and now >= refresh_point(token, timing, jitter):
            return Decision(Action.REFRESH_SOON, token)
        return Decision(Action.USE, token)
    if record is not None and record.status is TokenStatus.NEEDS_REAUTHORIZATION:
        return Decision(Action.REAUTHORIZE)
    if record is not None and now < record.retry_at:
        return Decision(Action.COOL_DOWN, until=record.retry_at)
    return Decision(Action.REFRESH_NOW)


def status(record: TokenRecord, now: float, timing: Timing) -> Status:
    if record.status is TokenStatus.NEEDS_REAUTHORIZATION:
        return Status.NEEDS_REAUTHORIZATION
    if now < record.retry_at:
        return Status.COOLING_DOWN
    action = decide(record, now, timing).action
    if action is Action.USE:
        return Status.OK
    return Status.EXPIRING if action is Action.REFRESH_SOON else Status.EXPIRED


# -- keeping idle shops authorised -----------------------------------------------------------

SPREAD = (0.8, 1.0)


class Ending(enum.StrEnum):
    """Why a shop's access ends (`tokens list --expiring-within`)."""

    AUTHORIZATION_ENDS = "authorization_ends"
    REFRESH_IDLE_EXPIRY = "refresh_idle_expiry"
    NEEDS_REAUTHORIZATION = "needs_reauthorization"


@dataclass(frozen=True)
class Upkeep:
    """How an app's shops are kept authorised while idle, and warned before their end."""

    idle_lifetime: float = 0.0  # seconds an unused refresh credential lives (0: forever)
    fraction: float = 0.25  # refreshed once the pair is this fraction of it old (spread down)
    warn_before: Sequence[float] = WARN_BEFORE  # warnings, seconds before an authorisation ends


def spread(shop: str, issued: float) -> float:
    """A factor in SPREAD, the same for a shop's pair wherever it is computed."""
    unit = zlib.crc32(f"{shop}@{issued:.3f}".encode()) / 0xFFFFFFFF
    return SPREAD[0] + (SPREAD[1] - SPREAD[0]) * unit


def idle_refresh_at(
    shop: str, record: TokenRecord | None, upkeep: Upkeep, *, seeded: bool = False
) -> float | None:
    """When keep-alive refreshes this record: None when nothing dies of idleness (no
    idle lifetime, no credential to keep alive, or a person must act). `seeded`: the
    config holds a first refresh token for the shop; with none stored, it is used at once
    (its age is unknown)."""
    if upkeep.idle_lifetime <= 0:
        return None
    if record is not None and record.status is TokenStatus.NEEDS_REAUTHORIZATION:
        return None
    retry_at = record.retry_at if record is not None else 0.0
    token = record.token if record is not None else None
    if token is None or not token.refresh_token:
        return retry_at if seeded else None
    issued = token.obtained_at
    return max(issued + upkeep.idle_lifetime * upkeep.fraction * spread(shop, issued), retry_at)


def next_check(
    shop: str,
    record: TokenRecord | None,
    now: float,
    upkeep: Upkeep,
    ends_at: float | None,
    *,
    seeded: bool = False,
) -> float | None:
    """When keep-alive should next look at this shop (None: never, it leaves the index):
    its idle refresh, or the next expiry warning after `now`, whichever comes first."""
    if record is not None and record.status is TokenStatus.NEEDS_REAUTHORIZATION:
        return None
    refresh = idle_refresh_at(shop, record, upkeep, seeded=seeded)
    times = [refresh, next_warning_at(ends_at, now, upkeep.warn_before)]
    present = [at for at in times if at is not None]
    return min(present) if present else None


def idle_expiry(record: TokenRecord, upkeep: Upkeep) -> float | None:
    """When the stored refresh credential dies unless used (None: not of idleness)."""
    token = record.token
    if upkeep.idle_lifetime <= 0 or token is None or not token.refresh_token:
        return None
    return token.refresh_expires_at or token.obtained_at + upkeep.idle_lifetime


def access_ends(
    record: TokenRecord, now: float, upkeep: Upkeep, ends_at: float | None
) -> tuple[float, Ending] | None:
    """When the shop's access ends unless someone acts, and why (None: it does not)."""
    if record.status is TokenStatus.NEEDS_REAUTHORIZATION:
        return now, Ending.NEEDS_REAUTHORIZATION
    endings = [
        (ends_at, Ending.AUTHORIZATION_ENDS),
        (idle_expiry(record, upkeep), Ending.REFRESH_IDLE_EXPIRY),
    ]
    known = [(at, why) for at, why in endings if at is not None]
    return min(known, key=lambda ending: ending[0]) if known else None
