"""Events.emit(): every shop event becomes a log line, a counter and a stream entry.

emit() never raises and never makes a request wait long. The log line and
the counter happen at once. The stream write is bounded by EMIT_TIMEOUT;
when the store is down (or slow) the event is *held* in this process (the
outbox, at most OUTBOX_LIMIT, oldest dropped first with an error line and
`authproxy_events_dropped_total{reason="outbox_full"}`), and the delivery
task writes held events to the stream, oldest first, once the store answers.
While any event is held, later ones queue behind it, so a shop's events
reach the stream in the order they happened. A held event is lost only if
the process ends before the store comes back; its log line is then the
record (the shutdown says how many, `reason="shutdown"`). An event written
twice (a timed-out write that had in fact landed) keeps its id: receivers
deduplicate on X-AuthProxy-Event-Id.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Sequence

from authproxy.errors import StoreUnavailable
from authproxy.events.expiry import ExpiryWarnings
from authproxy.events.model import Event, EventType, changes
from authproxy.horizon import WARN_BEFORE
from authproxy.metrics import Metrics
from authproxy.models import Clock, TokenKey, TokenRecord
from authproxy.store.events import EventLog
from authproxy.store.marks import MemoryWarningMarks, WarningMarks

log = logging.getLogger("authproxy.events")
EMIT_TIMEOUT = 2.0
OUTBOX_LIMIT = 10_000
CLOSE_WITHIN = 5.0  # seconds a shutdown may spend writing held events
QUIET = frozenset({EventType.RECOVERED})  # logged at info; the rest want a person: warning


class Events:
    def __init__(
        self,
        stream: EventLog,
        metrics: Metrics,
        clock: Clock,
        failing_after: int = 3,
        *,
        marks: WarningMarks | None = None,
        warn_before: Sequence[float] = WARN_BEFORE,
        emit_timeout: float = EMIT_TIMEOUT,
        outbox_limit: int = OUTBOX_LIMIT,
    ) -> None:
        self.stream, self.metrics, self.clock = stream, metrics, clock
        self.failing_after = failing_after
        self.emit_timeout, self.outbox_limit = emit_timeout, outbox_limit
        self.outbox: collections.deque[Event] = collections.deque()
        self.expiry = ExpiryWarnings(marks or MemoryWarningMarks(), self.emit, warn_before)

    async def emit(self, event: Event) -> None:
        """Log, count and store `event` (or hold it while the store is away). Never raises."""
        self._announce(event)
        try:
            event.to_json()
        except (TypeError, ValueError) as exc:  # a bug in the caller's data: never hold it
            log.error("event %s dropped: its data is not JSON (%s)", event.id, exc)
            self.metrics.event_dropped("malformed")
            return
        if self.outbox:
            self._hold(event)
            return
        try:
            await self._write(event)
        except asyncio.CancelledError:
            self._hold(event)  # the caller went away: the event stays
            raise
        except Exception as exc:
            self._hold(event)
            log.warning("event %s held until the store answers (%s)", event.id, _why(exc))

    async def shop_changed(
        self, key: TokenKey, before: TokenRecord | None, after: TokenRecord | None
    ) -> None:
        """Emit what writing `after` over `before` means (see model.changes). Never raises."""
        for kind, data in changes(before, after, self.failing_after):
            await self.emit(Event.new(kind, key, self.clock.now(), **data))

    async def authorization_ends(self, key: TokenKey, ends_at: float | None, now: float) -> Event | None:
        """shop.authorization_expiring when a warning (30, 7, 1 days before) is due for the
        authorisation ending at `ends_at` and no replica sent it yet (expiry.py). Never raises."""
        return await self.expiry.check(key, ends_at, now)

    async def flush(self) -> int:
        """Write held events to the stream, oldest first, until one fails; how many were written."""
        written = 0
        while self.outbox:
            try:
                await self._write(self.outbox[0])
            except Exception as exc:
                log.debug("held events stay held (%s)", _why(exc))
                break
            self.outbox.popleft()
            written += 1
        self.metrics.events_held.set(len(self.outbox))
        if written:
            log.info("wrote %d held event(s) to the store", written)
        return written

    async def close(self, within: float = CLOSE_WITHIN) -> int:
        """At shutdown: write what is held (bounded), report the rest lost; how many were lost."""
        try:
            async with asyncio.timeout(within):
                await self.flush()
        except TimeoutError:
            pass
        return self.abandon()

    def abandon(self) -> int:
        """At shutdown: what is still held is lost (its log line remains); say so."""
        lost = len(self.outbox)
        if lost:
            ids = ", ".join(event.id for event in list(self.outbox)[:10])
            log.error(
                "%d event(s) never reached the store and are lost (%s%s)", lost, ids, ", …" * (lost > 10)
            )
            self.metrics.event_dropped("shutdown", lost)
            self.outbox.clear()
            self.metrics.events_held.set(0)
        return lost

    async def _write(self, event: Event) -> None:
        async with asyncio.timeout(self.emit_timeout):
            await self.stream.append(event.to_json())

    def _announce(self, event: Event) -> None:
        self.metrics.event(event.type.value)
        fields = {"event": event.type.value, "app": event.app, "shop": event.shop, "event_id": event.id}
        fields.update({name: value for name, value in event.data.items() if name not in fields})
        level = logging.INFO if event.type in QUIET else logging.WARNING
        log.log(level, "%s %s", event.type.value, event.key, extra={"fields": fields})

    def _hold(self, event: Event) -> None:
        if len(self.outbox) >= self.outbox_limit:
            dropped = self.outbox.popleft()
            log.error(
                "event outbox full (%d): dropped %s (%s)", self.outbox_limit, dropped.id, dropped.summary()
            )
            self.metrics.event_dropped("outbox_full")
        self.outbox.append(event)
        self.metrics.events_held.set(len(self.outbox))


def _why(exc: BaseException) -> str:
    if isinstance(exc, StoreUnavailable):
        return exc.detail
    if isinstance(exc, TimeoutError):
        return "the store did not answer in time"
    return type(exc).__name__
