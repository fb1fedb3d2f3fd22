"""Authorisation horizons: which expiry warning is due, and when the next one falls (pure).

A horizon is the moment a shop's authorisation ends whatever we do: TikTok's
`refresh_token_expire_in` (absolute), Amazon's yearly re-authorisation, a
Shopee authorisation's `expire_time`, when known. Not a refresh token's
*idle* expiry (Shopee's 30 days, restarted by every refresh): that one moves
with each refresh and is keep-alive's business, not a warning's.

A warning is sent at each offset before the end (`[keepalive] warn_before`,
in seconds: 30, 7 and 1 days), each once per horizon. When several offsets
have passed unsent (a shop first seen 5 days before its end), only the most
urgent one is due: a 30-day warning 5 days before the end would mislead.
Horizons less than SAME_HORIZON apart are one horizon (a platform that
restates the end time with a few seconds' drift does not re-warn); a
re-authorised shop has a new horizon, and is warned again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

DAY = 86400.0
#: seconds before the end: 30, 7 and 1 days
WARN_BEFORE: tuple[float, ...] = (30 * DAY, 7 * DAY, DAY)
SAME_HORIZON = DAY


def warning_due(
    ends_at: float | None,
    now: float,
    sent: Mapping[float, float] | None = None,
    before: Sequence[float] = WARN_BEFORE,
) -> float | None:
    """The warning (its offset, seconds before `ends_at`) to send now, or None.

    `sent` maps a warning already sent to the horizon it was sent for."""
    if ends_at is None or now >= ends_at:
        return None
    passed = [offset for offset in before if ends_at - now <= offset]
    if not passed:
        return None
    due = min(passed)
    earlier = (sent or {}).get(due)
    if earlier is not None and same_horizon(earlier, ends_at):
        return None
    return due


def next_warning_at(ends_at: float | None, now: float, before: Sequence[float] = WARN_BEFORE) -> float | None:
    """When the next warning after `now` falls due (None: none is left)."""
    if ends_at is None:
        return None
    coming = [ends_at - offset for offset in before if ends_at - offset > now]
    return min(coming) if coming else None


def same_horizon(first: float, second: float) -> bool:
    return abs(first - second) < SAME_HORIZON


def days_left(ends_at: float, now: float) -> int:
    """Whole days left, rounded up: 29.5 days left is "30 days"."""
    return max(0, math.ceil((ends_at - now) / DAY))


def in_days(offset: float) -> int | float:
    """A warning's offset as people read it: 30 (days); a fraction only for test-scaled offsets."""
    days = offset / DAY
    return int(days) if days.is_integer() else round(days, 6)
