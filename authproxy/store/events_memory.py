"""The event log's in-process twin: a memory store's stream and consumer group (demo, tests).

The same semantics as store/events.py's Redis log, in one process: ids
`<ms>-<seq>`, a group that hands each entry to one consumer, pending entries
until acknowledged, take-over of entries left idle, trimming to max_events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from authproxy.store.events import PAGE, Entry, entry_order


@dataclass
class _Pending:
    consumer: str
    since: float  # monotonic time of the last delivery or touch


@dataclass
class MemoryEventLog:
    """The same semantics in one process (the memory store: demo, tests)."""

    max_events: int = 100_000
    entries: list[Entry] = field(default_factory=list)
    group: bool = False
    delivered: str = "0-0"  # the group's last delivered id
    pending: dict[str, _Pending] = field(default_factory=dict)
    consumers: dict[str, float] = field(default_factory=dict)  # consumer -> last seen
    _last: tuple[int, int] = (0, -1)
    _added: asyncio.Event | None = None

    async def append(self, payload: str) -> str:
        ms = int(time.time() * 1000)
        last_ms, last_seq = self._last
        self._last = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        entry = Entry(f"{self._last[0]}-{self._last[1]}", payload)
        self.entries.append(entry)
        del self.entries[: max(0, len(self.entries) - self.max_events)]
        if self._added is not None:
            self._added.set()
            self._added = None
        return entry.id

    async def ensure_group(self) -> None:
        if not self.group:
            self.group, self.delivered = True, self.entries[-1].id if self.entries else "0-0"

    def _seen(self, consumer: str) -> float:
        now = time.monotonic()
        self.consumers[consumer] = now
        return now

    async def read_new(self, consumer: str, count: int) -> list[Entry]:
        now = self._seen(consumer)
        self.group = True  # as Redis's log recovers a lost group: everything held is new
        fresh = [e for e in self.entries if entry_order(e.id) > entry_order(self.delivered)][:count]
        for entry in fresh:
            self.pending[entry.id] = _Pending(consumer, now)
        if fresh:
            self.delivered = fresh[-1].id
        return fresh

    async def claim_stale(self, consumer: str, min_idle: float, count: int) -> list[Entry]:
        now = self._seen(consumer)
        stale = sorted((i for i, p in self.pending.items() if now - p.since >= min_idle), key=entry_order)
        present = {entry.id: entry for entry in self.entries}
        claimed = []
        for entry_id in stale[:count]:
            if entry_id not in present:
                del self.pending[entry_id]  # trimmed away
                continue
            self.pending[entry_id] = _Pending(consumer, now)
            claimed.append(present[entry_id])
        return claimed

    async def touch(self, consumer: str, ids: Sequence[str]) -> None:
        now = self._seen(consumer)
        for entry_id in ids:
            if entry_id in self.pending:
                self.pending[entry_id] = _Pending(consumer, now)

    async def ack(self, ids: Sequence[str]) -> None:
        for entry_id in ids:
            self.pending.pop(entry_id, None)

    async def leave(self, consumer: str) -> None:
        self.consumers.pop(consumer, None)
        self.pending = {i: p for i, p in self.pending.items() if p.consumer != consumer}

    async def sweep(self, idle: float) -> int:
        now, busy = time.monotonic(), {p.consumer for p in self.pending.values()}
        dead = [c for c, seen in self.consumers.items() if c not in busy and now - seen >= idle]
        for name in dead:
            del self.consumers[name]
        return len(dead)

    async def backlog(self) -> int:
        if not self.group:
            return 0
        unread = sum(1 for e in self.entries if entry_order(e.id) > entry_order(self.delivered))
        return len(self.pending) + unread

    async def since(self, start_ms: int, count: int, after: str | None = None) -> list[Entry]:
        if after is not None:
            return [e for e in self.entries if entry_order(e.id) > entry_order(after)][:count]
        return [e for e in self.entries if entry_order(e.id) >= (start_ms, 0)][:count]

    async def follow(self, after: str, wait: float) -> list[Entry]:
        found = [e for e in self.entries if entry_order(e.id) > entry_order(after)][:PAGE]
        if found:
            return found
        added = self._added = self._added or asyncio.Event()
        try:
            async with asyncio.timeout(wait):
                await added.wait()
        except TimeoutError:
            return []
        return [e for e in self.entries if entry_order(e.id) > entry_order(after)][:PAGE]

    async def last_id(self) -> str:
        return self.entries[-1].id if self.entries else "0-0"
