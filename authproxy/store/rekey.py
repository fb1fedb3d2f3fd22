"""The keys stored records need: the start-up check, and `keys rotate`.

Both read the store in batches (SCAN plus one pipelined read per batch) and
look only at the key ids the envelopes name; nothing is decrypted to count.

Rotation re-encrypts a record by reading and writing it back through the
store (the codec seals with the active key), under the record's refresh lock
(so it never lands in the middle of a refresh: a refresher that waits sees the
version move and finds its token unchanged; a record marked `spending` by a
refresh that has not written back is left alone too) and with compare-and-set on the
version it read: a conflict means someone wrote meanwhile, so it reads again
and never overwrites the newer record. A busy lock puts the record back for a
later pass. Writes are throttled to `rate` per second.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from authproxy.errors import ConfigError, SecretUndecryptable, StoreUnavailable
from authproxy.keyring import Keyring
from authproxy.models import TokenKey
from authproxy.store import RawRecord, TokenStore
from authproxy.store.codec import sealed_with

log = logging.getLogger("authproxy.store")
BATCH = 500
LOCK_TTL = 5.0  # seconds a rotation holds a record's refresh lock at most (a get and a put)
ATTEMPTS = 5  # compare-and-set conflicts on one record before it is left for the next pass
PASSES = 5  # full passes before rotation gives up on records that stay busy or keep changing
PASS_PAUSE = 1.0  # seconds between passes (a refresh holding a lock is over by then)


@runtime_checkable
class SealedStore(Protocol):
    """A store that keeps records at rest, sealed with its keyring (the Redis store)."""

    keyring: Keyring | None

    def raw_records(self, batch: int = BATCH) -> AsyncIterator[list[RawRecord]]: ...


@dataclass
class Census:
    """How many records name each key id ('' for plain secrets), with one example each."""

    records: int = 0
    by_key: Counter[str] = field(default_factory=Counter)
    example: dict[str, TokenKey] = field(default_factory=dict)

    def add(self, key: TokenKey, ids: frozenset[str]) -> None:
        self.records += 1
        for kid in ids:
            self.by_key[kid] += 1
            self.example.setdefault(kid, key)


async def census(store: SealedStore, batch: int = BATCH) -> Census:
    counted = Census()
    async for rows in store.raw_records(batch):
        for row in rows:
            counted.add(row.key, sealed_with(row.data))
    return counted


async def refuse_unknown_keys(store: TokenStore, batch: int = BATCH) -> Census | None:
    """Start-up (and `tokens`) check: a ConfigError naming each key id the records need
    and the keyring lacks. None for a store that keeps nothing at rest."""
    if not isinstance(store, SealedStore):
        return None
    counted = await census(store, batch)
    known = store.keyring.ids if store.keyring is not None else frozenset()
    missing = sorted(kid for kid in counted.by_key if kid and kid not in known)
    if missing:
        needs = "; ".join(
            f"key {kid!r} ({counted.by_key[kid]} record(s), e.g. {counted.example[kid]})" for kid in missing
        )
        have = f"the keyring has {', '.join(sorted(known))}" if known else "no keyring is configured"
        raise ConfigError(
            f"stored tokens need {needs}, and {have}: add the key to server.keys (or "
            "AUTHPROXY_KEYS) on every replica, keeping the others until `authproxy keys rotate` is done"
        )
    return counted


async def start_up_check(store: TokenStore) -> None:
    """Refuse records under unknown key ids; say once how tokens are stored. An
    unreachable store is no reason not to start (readyz says 503 meanwhile): a record
    under an unknown key then answers secret_undecryptable when a request reads it."""
    try:
        counted = await refuse_unknown_keys(store)
    except StoreUnavailable:
        log.warning("token store unreachable at start-up: the key ids of stored tokens were not checked")
        return
    keyring = store.keyring if isinstance(store, SealedStore) else None
    if counted is None:
        log.info("tokens are stored unencrypted, in this process only (memory store)")
    elif keyring is None:
        log.info("no keyring (server.keys or AUTHPROXY_KEYS): tokens are stored unencrypted")
    else:
        held = ", ".join(f"{kid or 'plain'} {n}" for kid, n in sorted(counted.by_key.items())) or "none"
        log.info(
            "tokens are sealed with key %s (keyring: %s); %d stored record(s) by key: %s",
            keyring.active,
            ", ".join(sorted(keyring.ids)),
            counted.records,
            held,
        )


# -- rotation ------------------------------------------------------------------------------------


@dataclass
class Rotation:
    rewritten: int = 0
    already: int = 0  # under the active key when read
    conflicts: int = 0  # compare-and-set lost to another writer: read again
    busy: int = 0  # lock held (a refresh under way): put back for a later pass
    undecryptable: dict[TokenKey, str] = field(default_factory=dict)
    left: Census = field(default_factory=Census)  # records not under the active key afterwards


class Throttle:
    """At most `rate` calls of `wait` return per second (evenly spaced)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_at = 0.0

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.next_at = max(self.next_at + self.interval, now)
        if self.next_at > now:
            await asyncio.sleep(self.next_at - now)


Progress = Callable[[Rotation], None]


async def rotate(
    store: TokenStore, *, rate: float, batch: int = BATCH, progress: Progress | None = None
) -> Rotation:
    """Re-encrypt every record not under the active key; passes until none is left
    (or PASSES ran: `left` then says which key ids records still name)."""
    if not isinstance(store, SealedStore) or store.keyring is None:
        raise ConfigError("keys rotate needs the Redis store and a keyring (server.keys)")
    active = store.keyring.active
    done = Rotation()
    throttle = Throttle(rate)
    for attempt in range(PASSES):
        if attempt:
            await asyncio.sleep(PASS_PAUSE)
        pending = False
        async for rows in store.raw_records(batch):
            for row in rows:
                if sealed_with(row.data) <= {active}:
                    done.already += 1 if attempt == 0 else 0
                    continue
                pending = True
                await throttle.wait()
                await _rewrite(store, row.key, done)
            if progress is not None:
                progress(done)
        if not pending:
            break
    done.left = await _left(store, active, done)
    return done


async def _rewrite(store: TokenStore, key: TokenKey, done: Rotation) -> None:
    for _ in range(ATTEMPTS):
        lock = store.lock(key, LOCK_TTL)
        if not await lock.acquire():
            done.busy += 1
            return
        try:
            record = await store.get(key)  # opens with any key of the ring
            if record is None or record.token is None:
                return
            if record.spending:  # a refresh spent its credential and has not written back
                done.busy += 1
                return
            if await store.put(key, record, expected_version=record.version) is not None:
                done.rewritten += 1
                done.undecryptable.pop(key, None)
                return
        except SecretUndecryptable as exc:
            done.undecryptable[key] = exc.reason
            return
        finally:
            await lock.release()
        done.conflicts += 1


async def _left(store: SealedStore, active: str, done: Rotation) -> Census:
    left = Census()
    async for rows in store.raw_records():
        for row in rows:
            ids = sealed_with(row.data)
            if not ids <= {active}:
                left.add(row.key, ids - {active})
    return left
