"""An in-process store: for one process (the demo, tests, a lone sidecar)."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from dataclasses import dataclass, field

from authproxy.models import TokenKey, TokenRecord
from authproxy.store import ANY_VERSION


@dataclass
class MemoryLock:
    store: MemoryStore
    name: TokenKey
    ttl: float
    owner: str = field(default_factory=lambda: secrets.token_hex(16))

    async def acquire(self) -> bool:
        now = asyncio.get_running_loop().time()
        held = self.store.locks.get(self.name)
        if held is not None and held[1] > now:
            return False
        self.store.locks[self.name] = (self.owner, now + self.ttl)
        return True

    async def release(self) -> None:
        held = self.store.locks.get(self.name)
        if held is not None and held[0] == self.owner:
            del self.store.locks[self.name]


class MemoryStore:
    def __init__(self) -> None:
        self.records: dict[TokenKey, TokenRecord] = {}
        self.locks: dict[TokenKey, tuple[str, float]] = {}
        self._changed: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def get(self, key: TokenKey) -> TokenRecord | None:
        return self.records.get(key)

    async def put(self, key: TokenKey, record: TokenRecord, *, expected_version: int) -> int | None:
        current = self.records.get(key)
        version = current.version if current else 0
        if expected_version not in (ANY_VERSION, version):
            return None
        self.records[key] = dataclasses.replace(record, version=version + 1)
        await self._notify()
        return version + 1

    async def delete(self, key: TokenKey) -> bool:
        found = self.records.pop(key, None) is not None
        await self._notify()
        return found

    async def keys(self) -> list[TokenKey]:
        return sorted(self.records, key=str)

    def lock(self, key: TokenKey, ttl: float) -> MemoryLock:
        return MemoryLock(self, key, ttl)

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

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
