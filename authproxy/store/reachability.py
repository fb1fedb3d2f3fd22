"""Whether the store answers, for callers that can do without it (rate buckets, call slots).

Such a caller goes on without the store when it fails to answer; without this,
every call during an outage would first wait out the store's timeout. After a
failure the store counts as `down` until a probe (a harmless ask, run in the
background, one at a time, at most every PROBE_EVERY) gets an answer: an
outage costs one timeout and one log line, not one of each per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from authproxy.errors import StoreUnavailable

log = logging.getLogger("authproxy.store")
#: while the store is unreachable, it is probed at most this often (seconds)
PROBE_EVERY = 1.0


class Reachability:
    """`down` from a failure until a probe gets an answer; `what` names the user in logs."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down = False
        self._probe: asyncio.Task[None] | None = None
        self._probed_at = -PROBE_EVERY

    def failed(self) -> None:
        """A call found the store unreachable: the first probe is PROBE_EVERY away."""
        self.down = True
        self._probed_at = time.monotonic()

    def probe(self, ask: Callable[[], Awaitable[object]]) -> None:
        now = time.monotonic()
        if self._probe is None and now - self._probed_at >= PROBE_EVERY:
            self._probed_at = now
            self._probe = asyncio.create_task(self._run(ask))

    async def _run(self, ask: Callable[[], Awaitable[object]]) -> None:
        try:
            await ask()
        except StoreUnavailable:
            return
        except Exception as exc:  # a bug: the next probe tries again
            log.error("probing the store for %s failed: %s", self.what, type(exc).__name__)
            return
        else:
            self.down = False
            log.info("the store answers again: %s are back", self.what)
        finally:
            self._probe = None

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
