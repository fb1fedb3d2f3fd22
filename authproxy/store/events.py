"""The event log: a Redis stream read by one consumer group (its memory twin: events_memory.py).

Redis keeps everything: `{prefix}:events` is a stream (XADD with an
approximate MAXLEN trim), the consumer group `webhook` hands each entry to
one consumer (XREADGROUP), remembers it as pending until acknowledged
(XACK), and lets another consumer take over entries a dead one left pending
(XAUTOCLAIM past an idle time). A live consumer that holds an entry for long
(retrying a receiver that is down) resets the idle time (XCLAIM JUSTID to
itself), so nobody takes it over while it lives. Every command names the one
stream key: Cluster-safe.

Entries carry one field, `e`: the event's JSON (events/model.py reads it);
this module moves opaque payloads. Entry ids are Redis's `<ms>-<seq>`, and
the memory twin (events_memory.py) makes the same, so `--since` means the
same on both. store/beside.py picks the one beside a token store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from authproxy.store.redis import _reachable

GROUP = "webhook"
FIELD = b"e"
PAGE = 500  # entries per read when following


@dataclass(frozen=True)
class Entry:
    id: str  # the stream id, "<ms>-<seq>"
    payload: str


class EventLog(Protocol):
    async def append(self, payload: str) -> str:
        """Add an entry (trimming the oldest past the cap); its id."""

    async def ensure_group(self) -> None:
        """Create the consumer group (at the stream's end) if there is none."""

    async def read_new(self, consumer: str, count: int) -> list[Entry]:
        """Up to `count` entries no consumer has had yet; pending for `consumer` until acked."""

    async def claim_stale(self, consumer: str, min_idle: float, count: int) -> list[Entry]:
        """Entries left pending by any consumer for `min_idle` seconds, now `consumer`'s.
        Pending ids whose entries were trimmed away are dropped from the group."""

    async def touch(self, consumer: str, ids: Sequence[str]) -> None:
        """Reset the idle time of `consumer`'s pending entries (it is alive and on them)."""

    async def ack(self, ids: Sequence[str]) -> None: ...

    async def leave(self, consumer: str) -> None:
        """Remove `consumer` from the group; only call it with nothing pending."""

    async def sweep(self, idle: float) -> int:
        """Remove consumers with nothing pending, silent for `idle` seconds (dead ones)."""

    async def backlog(self) -> int:
        """Entries not yet acknowledged: pending plus never read (0 without a group)."""

    async def since(self, start_ms: int, count: int, after: str | None = None) -> list[Entry]:
        """Entries from `start_ms` (or after id `after`) on, oldest first, at most `count`."""

    async def follow(self, after: str, wait: float) -> list[Entry]:
        """Entries after id `after`, waiting up to `wait` seconds for one."""

    async def last_id(self) -> str:
        """The newest entry's id ("0-0": none): where following from now starts."""


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _entries(raw: Any) -> list[Entry]:
    """Stream entries as redis-py returns them: [(id, {field: value} or None), ...]."""
    found = []
    for entry_id, fields in raw or ():
        payload = (fields or {}).get(FIELD)
        found.append(Entry(_text(entry_id), _text(payload) if payload is not None else ""))
    return found


def _first_stream(reply: Any) -> list[Entry]:
    """The entries of the one stream an XREAD/XREADGROUP reply names."""
    return _entries(reply[0][1]) if reply else []


class _Unless:
    """Swallow a ResponseError whose text has one of `expected` (inside `_reachable`,
    which would take it for an outage); `bool(self)`: whether one was swallowed."""

    def __init__(self, expected: tuple[str, ...]) -> None:
        self.expected, self.swallowed = expected, False

    def __bool__(self) -> bool:
        return self.swallowed

    async def __aenter__(self) -> _Unless:
        return self

    async def __aexit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, ResponseError) and any(text in str(exc) for text in self.expected):
            self.swallowed = True
        return self.swallowed


def _unless(*expected: str) -> _Unless:
    return _Unless(expected)


def _ms(seconds: float) -> int:
    return max(0, int(seconds * 1000))


class RedisEventLog:
    def __init__(self, client: aioredis.Redis, prefix: str, max_events: int = 100_000) -> None:
        self.client, self.name, self.max_events = client, f"{prefix}:events", max_events

    async def append(self, payload: str) -> str:
        async with _reachable():
            entry_id = await self.client.xadd(
                self.name, {FIELD: payload}, maxlen=self.max_events, approximate=True
            )
        return _text(entry_id)

    async def ensure_group(self, start: str = "$") -> None:
        async with _reachable(), _unless("BUSYGROUP"):  # BUSYGROUP: there is one already
            await self.client.xgroup_create(self.name, GROUP, id=start, mkstream=True)

    async def read_new(self, consumer: str, count: int) -> list[Entry]:
        reply = None
        async with _reachable(), _unless("NOGROUP") as missing:
            reply = await self.client.xreadgroup(GROUP, consumer, {self.name: ">"}, count=count)
        if missing:
            # the stream was deleted (and maybe written again since): all it holds is new
            await self.ensure_group(start="0")
        return _first_stream(reply)

    async def claim_stale(self, consumer: str, min_idle: float, count: int) -> list[Entry]:
        reply: Any = None
        async with _reachable(), _unless("NOGROUP"):
            reply = await self.client.xautoclaim(
                self.name, GROUP, consumer, _ms(min_idle), start_id="0-0", count=count
            )
        claimed = _entries(reply[1] if reply else ())
        gone = [entry.id for entry in claimed if not entry.payload]  # trimmed (Redis < 7 returns them)
        await self.ack(gone)
        return [entry for entry in claimed if entry.payload]

    async def touch(self, consumer: str, ids: Sequence[str]) -> None:
        if ids:
            async with _reachable():
                await self.client.xclaim(self.name, GROUP, consumer, 0, list(ids), justid=True)

    async def ack(self, ids: Sequence[str]) -> None:
        if ids:
            async with _reachable():
                await self.client.xack(self.name, GROUP, *ids)

    async def leave(self, consumer: str) -> None:
        async with _reachable():
            await self.client.xgroup_delconsumer(self.name, GROUP, consumer)

    async def sweep(self, idle: float) -> int:
        consumers: Any = []
        async with _reachable():
            async with _unless("no such key", "NOGROUP"):
                consumers = await self.client.xinfo_consumers(self.name, GROUP)
            dead = [c["name"] for c in consumers if c["pending"] == 0 and c["idle"] >= _ms(idle)]
            for name in dead:
                await self.client.xgroup_delconsumer(self.name, GROUP, name)
        return len(dead)

    async def backlog(self) -> int:
        groups: Any = []
        async with _reachable(), _unless("no such key"):
            groups = await self.client.xinfo_groups(self.name)
        for group in groups:
            if group["name"] in (GROUP, GROUP.encode()):
                return int(group["pending"]) + int(group.get("lag") or 0)
        return 0

    async def since(self, start_ms: int, count: int, after: str | None = None) -> list[Entry]:
        start = f"({after}" if after else f"{start_ms}-0"
        async with _reachable():
            reply = await self.client.xrange(self.name, start, "+", count=count)
        return _entries(reply)

    async def follow(self, after: str, wait: float) -> list[Entry]:
        async with _reachable():
            reply = await self.client.xread({self.name: after}, count=PAGE, block=max(1, _ms(wait)))
        return _first_stream(reply)

    async def last_id(self) -> str:
        async with _reachable():
            newest = await self.client.xrevrange(self.name, count=1)
        return _entries(newest)[0].id if newest else "0-0"


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream id as a sortable pair: "1700000000000-3" -> (1700000000000, 3)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
