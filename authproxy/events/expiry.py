"""shop.authorization_expiring: each warning once per horizon, across replicas.

`check(key, ends_at, now)` is cheap to call often (after each token load or
refresh, or from keep-alive's walk): it decides locally (horizon.py) and asks
the store only when a warning is due and this process has not settled it yet;
the store's mark (store/marks.py) lets exactly one replica emit it. A store
outage leaves the warning for a later check. A replica that dies between its
mark and its emit loses that warning (a window of one stream write).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from authproxy.errors import StoreUnavailable
from authproxy.events.model import Event, EventType, iso
from authproxy.horizon import WARN_BEFORE, days_left, in_days, warning_due
from authproxy.models import TokenKey
from authproxy.store.marks import WarningMarks

log = logging.getLogger("authproxy.events")


class ExpiryWarnings:
    def __init__(
        self,
        marks: WarningMarks,
        emit: Callable[[Event], Awaitable[None]],
        before: Sequence[float] = WARN_BEFORE,
    ) -> None:
        self.marks, self.emit, self.before = marks, emit, tuple(before)
        self._settled: set[tuple[TokenKey, float, int]] = set()  # (shop, warning, horizon) seen marked

    async def check(self, key: TokenKey, ends_at: float | None, now: float) -> Event | None:
        """Emit the warning due for the authorisation ending at `ends_at`, if this replica
        is the first to; the event, or None. Never raises."""
        warning = warning_due(ends_at, now, before=self.before)
        if warning is None or ends_at is None:
            return None
        settled = (key, warning, round(ends_at))
        if settled in self._settled:
            return None
        try:
            first = await self.marks.mark(key, warning, ends_at)
        except StoreUnavailable as exc:
            log.debug("expiry warning for %s waits for the store (%s)", key, exc.detail)
            return None
        self._settled.add(settled)
        if not first:
            return None
        event = Event.new(
            EventType.AUTHORIZATION_EXPIRING,
            key,
            now,
            days_left=days_left(ends_at, now),
            warning=in_days(warning),
            expires_at=iso(ends_at),
        )
        await self.emit(event)
        return event
