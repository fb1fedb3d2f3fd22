"""Reading throttled replies (pure): Retry-After, a 429 at the gate, announced limits.

`Retry-After` is delay-seconds or an HTTP-date (RFC 9110 §10.2.3); Shoptet
sends the date. A date is kept as a Unix time (`retry_at`), so every replica
compares it with the same clock; seconds stay relative (`retry_in`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime

from authproxy.models import NOT_THROTTLED, HttpReply, Throttle

DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")
FILLING = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
#: longest wait a Retry-After may impose (a typo or a hostile reply must not park a shop for days)
LONGEST_WAIT = 3600.0


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value whatever the case of its name (plain dicts too)."""
    value = headers.get(name)
    if value is not None:
        return value
    lname = name.lower()
    for key, found in headers.items():
        if key.lower() == lname:
            return found
    return None


def parse_retry_after(value: str | None) -> tuple[float | None, float | None]:
    """(seconds, None) for delay-seconds, (None, Unix time) for an HTTP-date, else (None, None)."""
    if not value:
        return None, None
    delay = DELAY.match(value)
    if delay is not None:
        return min(float(delay.group(1)), LONGEST_WAIT), None
    try:
        moment = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None, None
    if moment.tzinfo is None:  # asctime form, or "-0000": an HTTP-date is always GMT (RFC 9110)
        moment = moment.replace(tzinfo=UTC)
    return None, moment.timestamp()


def parse_rate(value: str | None) -> float | None:
    """`x-amzn-RateLimit-Limit: 2.0` as calls per second (None when absent or not a rate)."""
    if not value:
        return None
    try:
        rate = float(value.strip())
    except ValueError:
        return None
    return rate if math.isfinite(rate) and rate > 0 else None


def parse_filling(value: str | None) -> tuple[int, int] | None:
    """`X-RateLimit-Bucket-Filling: 150/200` as (used, capacity)."""
    match = FILLING.match(value or "")
    if match is None:
        return None
    used, capacity = int(match.group(1)), int(match.group(2))
    return (used, capacity) if capacity > 0 else None


def gate_throttle(reply: HttpReply, throttled: bool | None = None) -> Throttle:
    """A refusal at the gate (HTTP 429 unless told otherwise), with its Retry-After."""
    if throttled is None:
        throttled = reply.status == 429
    if not throttled:
        return NOT_THROTTLED
    retry_in, retry_at = parse_retry_after(header(reply.headers, "Retry-After"))
    return Throttle(throttled=True, retry_in=retry_in, retry_at=retry_at)
