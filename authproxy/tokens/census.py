"""authproxy_shops{app,status}: how many shops are in each status, counted now and then.

A status depends on the clock (a token expires by itself), so it cannot be
kept up to date by the writes alone: every `census_every` seconds (jittered)
each process reads every stored record and counts the statuses the token
policy gives them (tokens/policy.py `status`: the same as `tokens list`).
Labels are the app and one of five statuses, whatever the number of shops.
Cost: one store read per shop per census, spread out (the census yields to
requests between reads).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Collection

from authproxy.errors import StoreUnavailable
from authproxy.metrics import Metrics
from authproxy.models import Clock
from authproxy.store import TokenStore
from authproxy.tokens.policy import Status, Timing, status

log = logging.getLogger("authproxy.keepalive")


class Census:
    def __init__(
        self,
        apps: Collection[str],
        store: TokenStore,
        timing: Timing,
        metrics: Metrics,
        clock: Clock,
        every: float,
    ) -> None:
        self.apps, self.store, self.timing = apps, store, timing
        self.metrics, self.clock, self.every = metrics, clock, every
        self._task: asyncio.Task[None] | None = None

    async def count(self) -> dict[str, collections.Counter[str]]:
        """Each configured app's shops by status; also sets the gauge."""
        counts: dict[str, collections.Counter[str]] = {app: collections.Counter() for app in self.apps}
        for key in await self.store.keys():
            if key.app not in counts:
                continue
            record = await self.store.get(key)
            if record is not None:
                counts[key.app][status(record, self.clock.now(), self.timing).value] += 1
            await asyncio.sleep(0)  # yield to requests
        for app, by_status in counts.items():
            self.metrics.shops_by_status(app, {s.value: by_status[s.value] for s in Status})
        return counts

    async def start(self) -> None:
        if self.apps:
            self._task = asyncio.create_task(self.run(), name="authproxy-census")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def run(self) -> None:
        task = asyncio.current_task()
        await asyncio.sleep(self.every * random.uniform(0.0, 0.2))  # replicas started together spread out
        while True:
            try:
                await self.count()
            except StoreUnavailable as exc:
                log.debug("census skipped: store unavailable (%s)", exc.detail)
            except Exception:
                log.exception("census failed")
            if task is not None and task.cancelling():
                raise asyncio.CancelledError  # redis-py (8.1) can swallow a cancellation mid-command
            await asyncio.sleep(self.every * random.uniform(0.8, 1.2))
