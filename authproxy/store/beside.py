"""State kept beside the token store: the same Redis and prefix, or the same process.

    event_log(store)      the shop-event stream and its consumer group (events.py)
    due_index(store)      the keep-alive due index (due.py)
    warning_marks(store)  which expiry warnings went out (marks.py)

Each kind is a small class built from a Redis store's client and prefix (no
connections of its own); its memory twin is made once per MemoryStore, so
every user of one memory store shares it, as processes sharing one Redis
share the Redis kind.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis

from authproxy.store import TokenStore
from authproxy.store.due import DueIndex, MemoryDueIndex, RedisDueIndex
from authproxy.store.events import EventLog, RedisEventLog
from authproxy.store.events_memory import MemoryEventLog
from authproxy.store.marks import MemoryWarningMarks, RedisWarningMarks, WarningMarks
from authproxy.store.memory import MemoryStore

R = TypeVar("R")
M = TypeVar("M")
_twins: weakref.WeakKeyDictionary[MemoryStore, dict[Any, Any]] = weakref.WeakKeyDictionary()


def beside(
    store: TokenStore, on_redis: Callable[[aioredis.Redis, str], R], in_memory: Callable[[], M]
) -> R | M:
    """`on_redis(client, prefix)` for a Redis-backed store (anything with a redis-py `client`
    and a key `prefix`: standalone, Sentinel or Cluster alike); for a MemoryStore, its one
    `in_memory()`. Any other store is refused: silently keeping per-process state where
    replicas expect shared state would split them."""
    client, prefix = getattr(store, "client", None), getattr(store, "prefix", None)
    if client is not None and isinstance(prefix, str):
        return on_redis(client, prefix)
    if isinstance(store, MemoryStore):
        twins = _twins.setdefault(store, {})
        if in_memory not in twins:
            twins[in_memory] = in_memory()
        made: M = twins[in_memory]
        return made
    raise TypeError(f"no shared state beside a {type(store).__name__}")


def event_log(store: TokenStore, max_events: int = 100_000) -> EventLog:
    log: RedisEventLog | MemoryEventLog = beside(
        store, lambda client, prefix: RedisEventLog(client, prefix, max_events), MemoryEventLog
    )
    log.max_events = max_events
    return log


def due_index(store: TokenStore) -> DueIndex:
    index: DueIndex = beside(store, RedisDueIndex, MemoryDueIndex)
    return index


def warning_marks(store: TokenStore) -> WarningMarks:
    marks: WarningMarks = beside(store, RedisWarningMarks, MemoryWarningMarks)
    return marks
