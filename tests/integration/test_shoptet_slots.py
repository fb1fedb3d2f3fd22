"""Shared call slots (Shoptet: 3 connections per token) on every store, and CallSlots on top.

Stores made by one factory share their data, as processes sharing Redis do.
Lease expiry runs on the store's own clock (Redis TIME / the event loop), so
the tests that need a lease to run out give it a short life and wait a bit
longer: time only moves forward. Leases that must still hold get lifetimes
far longer than the steps in between, so a loaded machine does not matter.
"""

from __future__ import annotations

import asyncio

import pytest

from authproxy.errors import StoreUnavailable, UpstreamBusy
from authproxy.models import TokenKey
from authproxy.slots import CallSlots
from authproxy.store import memory, redis
from authproxy.store.redis import RedisStore

KEY = TokenKey("shoptet", "eshop")
OTHER = TokenKey("shoptet", "other")


async def test_at_most_limit_leases_and_release_frees_one(stores):
    one, two = stores.make(), stores.make()
    assert [await one.acquire_slot(KEY, f"a{i}", 3, 30) for i in range(3)] == [True] * 3
    assert not await two.acquire_slot(KEY, "b", 3, 30)
    assert await two.acquire_slot(OTHER, "b", 3, 30), "keys are independent"
    await one.release_slot(KEY, "a1")
    assert await two.acquire_slot(KEY, "b", 3, 30)
    assert not await one.acquire_slot(KEY, "c", 3, 30)


async def test_expired_lease_of_a_dead_process_frees_its_slot(stores):
    store = stores.make()
    assert await store.acquire_slot(KEY, "dead", 1, 0.5)
    assert not await store.acquire_slot(KEY, "live", 1, 30)
    await asyncio.sleep(0.55)
    assert await store.acquire_slot(KEY, "live", 1, 30)


async def test_renewal_keeps_a_lease_and_fails_once_it_expired(stores):
    store = stores.make()
    assert await store.acquire_slot(KEY, "long", 1, 0.5)
    assert await store.renew_slot(KEY, "long", 30)
    await asyncio.sleep(0.55)
    assert not await store.acquire_slot(KEY, "other", 1, 30), "the renewed lease still holds"
    assert await store.acquire_slot(OTHER, "short", 1, 0.02)
    await asyncio.sleep(0.05)
    assert not await store.renew_slot(OTHER, "short", 30)
    assert not await store.renew_slot(KEY, "never-held", 30)


async def test_waiters_are_served_in_order(stores):
    one, two = stores.make(), stores.make()
    assert await one.acquire_slot(KEY, "holder", 1, 30)
    assert not await one.acquire_slot(KEY, "first", 1, 30)
    assert not await two.acquire_slot(KEY, "second", 1, 30)
    await one.release_slot(KEY, "holder")
    assert not await two.acquire_slot(KEY, "second", 1, 30), "first asked earlier"
    assert not await two.acquire_slot(KEY, "newcomer", 1, 30)
    assert await one.acquire_slot(KEY, "first", 1, 30)
    await one.release_slot(KEY, "first")
    assert await two.acquire_slot(KEY, "second", 1, 30)


async def test_a_waiter_that_stops_asking_loses_its_place(stores, monkeypatch):
    monkeypatch.setattr(memory, "SLOT_WAITER_TTL", 0.02)
    monkeypatch.setattr(redis, "SLOT_WAITER_TTL", 0.02)
    store = stores.make()
    assert await store.acquire_slot(KEY, "holder", 1, 30)
    assert not await store.acquire_slot(KEY, "gone", 1, 30)
    await store.release_slot(KEY, "holder")
    await asyncio.sleep(0.05)
    assert await store.acquire_slot(KEY, "next", 1, 30)


async def test_leaving_the_queue_lets_the_next_one_in(stores):
    store = stores.make()
    assert await store.acquire_slot(KEY, "holder", 1, 30)
    assert not await store.acquire_slot(KEY, "impatient", 1, 30)
    assert not await store.acquire_slot(KEY, "patient", 1, 30)
    await store.release_slot(KEY, "impatient")
    await store.release_slot(KEY, "holder")
    assert await store.acquire_slot(KEY, "patient", 1, 30)


# -- CallSlots ---------------------------------------------------------------------------------


class Gauge:
    def __init__(self) -> None:
        self.now = self.most = self.done = 0

    async def call(self, limiter: CallSlots, gate: asyncio.Event | None = None) -> None:
        async with limiter.slot(KEY, 3):
            self.now += 1
            self.most = max(self.most, self.now)
            await (gate.wait() if gate else asyncio.sleep(0.002))
            self.now -= 1
            self.done += 1


async def test_limiters_sharing_a_store_never_exceed_the_cap(stores):
    limiters = [CallSlots(stores.make(), wait=30) for _ in range(3)]
    gauge = Gauge()
    await asyncio.gather(*(gauge.call(limiters[i % 3]) for i in range(90)))
    assert gauge.done == 90
    assert gauge.most == 3


async def test_a_full_cap_answers_upstream_busy_after_the_wait(stores):
    store = stores.make()
    for i in range(3):
        assert await store.acquire_slot(KEY, f"elsewhere{i}", 3, 30)  # another process's calls
    limiter = CallSlots(store, wait=0.05)
    with pytest.raises(UpstreamBusy) as caught:
        async with limiter.slot(KEY, 3):
            pytest.fail("admitted over the cap")
    assert caught.value.status == 503 and caught.value.retry_after == 1
    await store.release_slot(KEY, "elsewhere0")
    async with limiter.slot(KEY, 3):
        pass  # the queue it left does not block anyone


async def test_local_waiters_give_up_after_the_wait_too(stores):
    limiter = CallSlots(stores.make(), wait=0.05)
    gauge, gate = Gauge(), asyncio.Event()
    holders = [asyncio.create_task(gauge.call(limiter, gate)) for _ in range(3)]
    while gauge.now < 3:
        await asyncio.sleep(0)
    with pytest.raises(UpstreamBusy):
        async with limiter.slot(KEY, 3):
            pass
    gate.set()
    await asyncio.gather(*holders)
    assert gauge.done == 3


async def test_a_cancelled_call_gives_its_slot_back(stores):
    store = stores.make()
    limiter = CallSlots(store, wait=30)
    gauge, gate = Gauge(), asyncio.Event()
    holders = [asyncio.create_task(gauge.call(limiter, gate)) for _ in range(3)]
    queued = asyncio.create_task(gauge.call(limiter, gate))
    while gauge.now < 3:
        await asyncio.sleep(0)
    holders[0].cancel()
    queued.cancel()
    await asyncio.gather(holders[0], queued, return_exceptions=True)
    assert await store.acquire_slot(KEY, "elsewhere", 3, 30), "both gave their places back"
    gate.set()
    await asyncio.gather(*holders[1:])


async def test_a_long_call_keeps_its_lease(stores):
    store = stores.make()
    limiter = CallSlots(store, wait=30, lease_ttl=0.6)  # renewed every 0.2 s
    async with limiter.slot(KEY, 1):
        await asyncio.sleep(1.0)  # well over its first lifetime
        assert not await store.acquire_slot(KEY, "elsewhere", 1, 30)
    assert await store.acquire_slot(KEY, "elsewhere", 1, 30)


async def test_no_cap_means_no_store_traffic(stores):
    limiter = CallSlots(stores.make(), wait=0.01)
    entered = 0
    for _ in range(10):
        async with limiter.slot(KEY, None):
            entered += 1
    assert entered == 10


async def test_an_unreachable_store_leaves_the_per_process_cap(unused_tcp_port):
    dead = RedisStore.from_url(f"redis://127.0.0.1:{unused_tcp_port}/0", "test")
    limiter = CallSlots(dead, wait=0.05)
    gauge, gate = Gauge(), asyncio.Event()
    try:
        holders = [asyncio.create_task(gauge.call(limiter, gate)) for _ in range(3)]
        while gauge.now < 3:
            await asyncio.sleep(0.001)
        with pytest.raises(UpstreamBusy):
            async with limiter.slot(KEY, 3):
                pass
        gate.set()
        await asyncio.gather(*holders)
        assert gauge.done == 3
    finally:
        await dead.close()


async def test_an_outage_costs_one_store_timeout_and_a_probe_finds_the_store_back(stores, monkeypatch):
    """After the store failed, calls take the per-process cap without asking it; a probe in
    the background (never waited on) sees it answer again, and slots are shared again."""
    store = stores.make()
    limiter = CallSlots(store, wait=30)
    asked: list[str] = []
    down = True
    acquire, release = store.acquire_slot, store.release_slot

    async def acquire_slot(*args: object) -> bool:
        asked.append("acquire")
        if down:
            raise StoreUnavailable("token store unreachable (test)")
        return await acquire(*args)

    async def release_slot(*args: object) -> None:
        asked.append("release")
        if down:
            raise StoreUnavailable("token store unreachable (test)")
        await release(*args)

    monkeypatch.setattr(store, "acquire_slot", acquire_slot)
    monkeypatch.setattr(store, "release_slot", release_slot)
    monkeypatch.setattr("authproxy.store.reachability.PROBE_EVERY", 1e9)  # no probe due yet
    for _ in range(3):
        async with limiter.slot(KEY, 3):
            pass
    assert asked == ["acquire"], "asked once; then the per-process cap at once"
    monkeypatch.setattr("authproxy.store.reachability.PROBE_EVERY", 0.0)  # a probe is due
    down = False
    async with limiter.slot(KEY, 3):
        assert limiter.reachability.down, "the probe runs in the background"
    async with asyncio.timeout(10):
        while limiter.reachability.down:
            await asyncio.sleep(0.001)
    assert asked == ["acquire", "release"]
    async with limiter.slot(KEY, 3):
        pass
    assert asked[2:] == ["acquire", "release"], "slots are shared again"
    await limiter.close()
