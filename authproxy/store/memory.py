"""An in-process store: for one process (the demo, tests, a lone sidecar)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import secrets
from dataclasses import dataclass, field

from authproxy.models import TokenKey, TokenRecord
from authproxy.store.base import ANY_VERSION, SLOT_WAITER_TTL


@dataclass
class MemoryLock:
    store: MemoryStore
    name: TokenKey
    ttl: float
    owner: str = field(default_factory=lambda: secrets.token_hex(16))
    holder_ttl: float = 0.0
    holder: str = ""

    async def acquire(self) -> bool:
        now = asyncio.get_running_loop().time()
        held = self.store.locks.get(self.name)
        if held is not None and held[1] > now:
            self.holder, self.holder_ttl = held[0], held[1] - now
            return held[0] == self.owner
        self.store.locks[self.name] = (self.owner, now + self.ttl)
        self.holder = self.owner
        return True

    async def release(self) -> None:
        held = self.store.locks.get(self.name)
        if held is not None and held[0] == self.owner:
            del self.store.locks[self.name]


@dataclass
class Slots:
    """One key's call slots: held leases and the queue of waiters (event-loop time)."""

    leases: dict[str, float] = field(default_factory=dict)  # lease -> expiry
    queue: dict[str, tuple[int, float]] = field(default_factory=dict)  # waiter -> (ticket, last asked)
    tickets: itertools.count[int] = field(default_factory=itertools.count)

    def acquire(self, lease: str, limit: int, ttl: float, now: float) -> bool:
        self.leases = {held: until for held, until in self.leases.items() if until > now}
        self.queue = {w: v for w, v in self.queue.items() if v[1] > now - SLOT_WAITER_TTL}
        ticket = self.queue[lease][0] if lease in self.queue else next(self.tickets)
        ahead = sum(1 for other, _ in self.queue.values() if other < ticket)
        if ahead < limit - len(self.leases):
            self.queue.pop(lease, None)
            self.leases[lease] = now + ttl
            return True
        self.queue[lease] = (ticket, now)
        return False


class MemoryStore:
    def __init__(self) -> None:
        self.records: dict[TokenKey, TokenRecord] = {}
        self.spending: dict[TokenKey, str] = {}
        self.locks: dict[TokenKey, tuple[str, float]] = {}
        self.slots: dict[TokenKey, Slots] = {}
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def get(self, key: TokenKey) -> TokenRecord | None:
        record, spending = self.records.get(key), self.spending.get(key, "")
        if record is None and spending:
            return TokenRecord(token=None, spending=spending)
        return dataclasses.replace(record, spending=spending) if record and spending else record

    async def put(
        self, key: TokenKey, record: TokenRecord, *, expected_version: int, durable: bool = False
    ) -> int | None:
        current = self.records.get(key)
        version = current.version if current else 0
        if expected_version not in (ANY_VERSION, version):
            return None
        self.records[key] = dataclasses.replace(record, version=version + 1, spending="")
        self.spending.pop(key, None)
        await self._notify()
        return version + 1

    async def mark_spending(self, key: TokenKey, version: int, owner: str) -> bool:
        current = self.records.get(key)
        if (current.version if current else 0) != version:
            return False
        self.spending[key] = owner
        return True

    async def delete(self, key: TokenKey) -> bool:
        self.spending.pop(key, None)
        found = self.records.pop(key, None) is not None
        await self._notify()
        return found

    async def keys(self) -> list[TokenKey]:
        return sorted(self.records, key=str)

    def lock(self, key: TokenKey, ttl: float, owner: str | None = None) -> MemoryLock:
        return MemoryLock(self, key, ttl) if owner is None else MemoryLock(self, key, ttl, owner)

    async def wait_for_change(self, key: TokenKey, version: int, timeout: float) -> bool:
        def moved() -> bool:
            record = self.records.get(key)
            return (record.version if record else 0) != version

        condition = self._condition()
        async with condition:
            try:
                async with asyncio.timeout(timeout):
                    await condition.wait_for(moved)
            except TimeoutError:
                return False
        return True

    async def _notify(self) -> None:
        condition = self._condition()
        async with condition:
            condition.notify_all()

    async def acquire_slot(self, key: TokenKey, lease: str, limit: int, ttl: float) -> bool:
        now = asyncio.get_running_loop().time()
        return self.slots.setdefault(key, Slots()).acquire(lease, limit, ttl, now)

    async def renew_slot(self, key: TokenKey, lease: str, ttl: float) -> bool:
        now = asyncio.get_running_loop().time()
        slots = self.slots.get(key)
        if slots is None or slots.leases.get(lease, 0.0) <= now:
            return False
        slots.leases[lease] = now + ttl
        return True

    async def release_slot(self, key: TokenKey, lease: str) -> None:
        slots = self.slots.get(key)
        if slots is not None:
            slots.leases.pop(lease, None)
            slots.queue.pop(lease, None)
            if not slots.leases and not slots.queue:
                del self.slots[key]

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
