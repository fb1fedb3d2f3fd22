"""The webhook consumer: each replica (each worker) is one consumer of the group.

A round (every `events.poll` seconds, jittered; at once while a backlog drains):

1. write events this process held while the store was away (emitter.py);
2. with nothing in hand, take over entries a silent consumer left pending
   longer than `claim_after` (XAUTOCLAIM; checked every claim_after/2), else
   read new ones (XREADGROUP, BATCH at most);
3. POST them in stream order, one at a time; XACK each one delivered.

A failed attempt (no answer, or any reply but 2xx) stops the round: the same
entry is tried again after a capped exponential backoff with jitter
(`retry_base` … `retry_max`), and the entries behind it wait, so a receiver
that comes back gets every event, each shop's in order. Across replicas,
order holds per consumer: two replicas draining a backlog at once may
interleave; `at` orders a shop's events. While it waits, the consumer resets
the idle time of what it holds, so nobody takes over from a live consumer;
a consumer that dies mid-delivery loses nothing: its entries are taken over
after `claim_after` (and may arrive twice: at-least-once). An event still
undelivered `retry_for` seconds after it happened is dropped with an error
line and `authproxy_events_dropped_total{reason="expired"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket

import aiohttp

from authproxy.errors import StoreUnavailable
from authproxy.events.emitter import Events
from authproxy.events.model import Event
from authproxy.events.webhook import WebhookSender
from authproxy.metrics import Metrics
from authproxy.models import Clock
from authproxy.settings import EventSettings
from authproxy.store.events import Entry, EventLog

log = logging.getLogger("authproxy.events")
BATCH = 50
SWEEP_EVERY = 600.0  # seconds between removals of dead consumers from the group
DEAD_AFTER = 86400.0  # a consumer silent this long, with nothing pending, is removed
STOP_WITHIN = 2.0  # seconds the shutdown may spend leaving the group


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class Delivery:
    def __init__(
        self,
        stream: EventLog,
        events: Events,
        settings: EventSettings,
        metrics: Metrics,
        clock: Clock,
        consumer: str | None = None,
    ) -> None:
        self.stream, self.events, self.settings = stream, events, settings
        self.metrics, self.clock = metrics, clock
        self.consumer = consumer or consumer_name()
        self.sender: WebhookSender | None = None
        self.queue: list[Entry] = []  # read, not yet delivered (pending for this consumer)
        self._unacked: list[str] = []  # delivered; the acknowledgement did not reach the store yet
        self.failures = 0
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._joined = False
        self._next_attempt = self._next_claim = self._next_gauge = self._next_sweep = self._touched = 0.0
        self._store_down = False

    async def start(self) -> None:
        settings = self.settings
        if settings.webhook_url:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=2),
                trust_env=False,
                auto_decompress=True,
                cookie_jar=aiohttp.DummyCookieJar(),  # a webhook's cookies are not ours to keep
            )
            secret = settings.webhook_secret.get_secret_value()
            self.sender = WebhookSender(self._session, settings.webhook_url, secret, settings.timeout)
            log.info("events: webhook to %s (consumer %s)", self.sender.host, self.consumer)
            with contextlib.suppress(StoreUnavailable, TimeoutError):
                async with asyncio.timeout(2.0):  # before traffic, so no event precedes the group
                    await self._join()
        self._task = asyncio.create_task(self.run(), name="authproxy-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._joined and not self.queue:  # nothing pending: leave the group tidy
            with contextlib.suppress(StoreUnavailable, TimeoutError):
                async with asyncio.timeout(STOP_WITHIN):
                    await self.stream.leave(self.consumer)
        await self.events.close()
        if self._session is not None:
            await self._session.close()

    async def run(self) -> None:
        task = asyncio.current_task()
        while True:
            pause = await self.step()
            if task is not None and task.cancelling():
                # redis-py (8.1) can swallow a cancellation that lands mid-command
                raise asyncio.CancelledError
            await asyncio.sleep(pause)

    async def step(self) -> float:
        """One round; the seconds to wait before the next."""
        try:
            if self.sender is not None and not self._joined:
                await self._join()
            await self.events.flush()
            if self.sender is None:
                return self._poll()
            await self._ack()
            await self._housekeeping()
            if not self.queue:
                self.queue = await self._fetch()
                self._touched = self._now()
            pause = await self._deliver(self.sender)
        except StoreUnavailable as exc:
            if not self._store_down:
                log.warning("events: store unavailable (%s); delivery resumes when it answers", exc.detail)
            self._store_down = True
            return self._poll()
        except Exception:
            log.exception("events: delivery round failed")
            return self._poll()
        if self._store_down:
            log.info("events: store available again")
            self._store_down = False
        return pause

    async def _join(self) -> None:
        await self.stream.ensure_group()
        self._joined = True

    async def _fetch(self) -> list[Entry]:
        now = self._now()
        if now >= self._next_claim:
            self._next_claim = now + self.settings.claim_after / 2 * random.uniform(0.75, 1.0)
            claimed = await self.stream.claim_stale(self.consumer, self.settings.claim_after, BATCH)
            if claimed:
                log.info("events: took over %d event(s) a silent consumer left undelivered", len(claimed))
                return claimed
        return await self.stream.read_new(self.consumer, BATCH)

    async def _deliver(self, sender: WebhookSender) -> float:
        """POST the queue in order; the pause before the next round."""
        delivered = 0
        while self.queue:
            wait = self._next_attempt - self._now()
            if wait > 0:
                await self._keep()
                return min(wait, self.settings.claim_after / 3)
            await self._keep()
            if await self._attempt(sender, self.queue[0]):
                self.queue.pop(0)
                delivered += 1
                await self._ack()  # with the store away, the next round acknowledges it
            await asyncio.sleep(0)
        return 0.0 if delivered else self._poll()

    async def _attempt(self, sender: WebhookSender, entry: Entry) -> bool:
        """Deliver one entry; True when it is done with (delivered, malformed or expired)."""
        try:
            event = Event.from_json(entry.payload)
        except ValueError as exc:
            log.error("events: entry %s is not an event (%s); dropped", entry.id, exc)
            self.metrics.event_dropped("malformed")
            self._unacked.append(entry.id)
            return True
        attempt = await sender.send(event, self.clock.now())
        if attempt.ok:
            self._unacked.append(entry.id)
            self.metrics.event_delivery("delivered")
            log.debug("events: delivered %s (%s)", event.id, attempt.outcome)
            self.failures, self._next_attempt = 0, 0.0
            return True
        self.metrics.event_delivery("failed")
        if self.clock.now() - event.at >= self.settings.retry_for:
            log.error(
                "events: gave up on %s after %gs undelivered (last: %s): %s",
                event.id,
                self.settings.retry_for,
                attempt.outcome,
                event.summary(),
            )
            self.metrics.event_dropped("expired")
            self._unacked.append(entry.id)
            self.failures, self._next_attempt = 0, 0.0
            return True
        self.failures += 1
        delay = self._backoff()
        self._next_attempt = self._now() + delay
        log.warning(
            "events: webhook delivery of %s failed (%s); attempt %d, next in %.1fs",
            event.id,
            attempt.outcome,
            self.failures,
            delay,
        )
        return False

    async def _ack(self) -> None:
        """Acknowledge what was delivered (raises StoreUnavailable, keeping it for later)."""
        if self._unacked:
            await self.stream.ack(self._unacked)
            self._unacked.clear()

    def _backoff(self) -> float:
        settings = self.settings
        step: float = settings.retry_base * 2.0 ** min(self.failures - 1, 32)
        return min(settings.retry_max, step * random.uniform(0.75, 1.25))

    async def _keep(self) -> None:
        """Tell the group this consumer still holds its queue (before anyone may take it over)."""
        if self.queue and self._now() - self._touched >= self.settings.claim_after / 3:
            await self.stream.touch(self.consumer, [entry.id for entry in self.queue])
            self._touched = self._now()

    async def _housekeeping(self) -> None:
        now = self._now()
        if now >= self._next_gauge:
            self._next_gauge = now + self.settings.claim_after / 2 * random.uniform(0.75, 1.25)
            self.metrics.events_undelivered.set(await self.stream.backlog())
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY * random.uniform(0.75, 1.25)
        removed = await self.stream.sweep(DEAD_AFTER)
        if removed:
            log.info("events: removed %d dead consumer(s) from the group", removed)

    def _poll(self) -> float:
        return self.settings.poll * random.uniform(0.5, 1.5)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()
