"""The keep-alive due index on every backend: claims with a lease, most overdue first,
each due shop to one claimer, due again when a claimer dies."""

from __future__ import annotations

import asyncio
import time

import pytest

from authproxy.models import TokenKey
from authproxy.store.beside import due_index
from authproxy.store.due import MAX_CLAIM

NOW = 1_700_000_000.0


def shop(name: str, app: str = "shopee") -> TokenKey:
    return TokenKey(app, name)


async def test_claim_hands_out_due_shops_most_overdue_first_with_a_lease(stores):
    index = due_index(stores.make())
    for name, due in (("late", NOW - 100), ("later", NOW - 300), ("now", NOW), ("soon", NOW + 60)):
        await index.schedule(shop(name), due)
    await index.schedule(shop("other-app", "tiktok"), NOW - 500)
    assert await index.claim("shopee", limit=2, lease=30, now=NOW) == [shop("later"), shop("late")]
    assert await index.due_at(shop("later")) == NOW + 30
    assert await index.claim("shopee", limit=10, lease=30, now=NOW) == [shop("now")]
    assert await index.claim("shopee", limit=10, lease=30, now=NOW) == []  # all leased or not due
    assert await index.size("shopee") == 4


async def test_a_claim_whose_claimer_died_falls_due_when_the_lease_ends(stores):
    index = due_index(stores.make())
    await index.schedule(shop("1"), NOW - 1)
    assert await index.claim("shopee", limit=5, lease=30, now=NOW) == [shop("1")]
    assert await index.claim("shopee", limit=5, lease=30, now=NOW + 29) == []
    assert await index.claim("shopee", limit=5, lease=30, now=NOW + 30) == [shop("1")]


async def test_schedule_replaces_the_lease_only_new_seeds_and_unschedule_removes(stores):
    index = due_index(stores.make())
    await index.schedule(shop("1"), NOW - 1)
    await index.claim("shopee", limit=5, lease=30, now=NOW)
    await index.schedule(shop("1"), NOW + 3600)  # refreshed: next due in an hour
    assert await index.claim("shopee", limit=5, lease=30, now=NOW + 60) == []
    await index.schedule(shop("1"), NOW, only_new=True)  # seeding leaves a scheduled shop alone
    assert await index.due_at(shop("1")) == NOW + 3600
    await index.schedule(shop("2"), NOW, only_new=True)
    assert await index.due_at(shop("2")) == NOW
    await index.unschedule(shop("1"))
    assert await index.due_at(shop("1")) is None
    assert await index.claim("shopee", limit=5, lease=30, now=NOW + 7200) == [shop("2")]


async def test_without_a_given_now_the_stores_clock_decides(stores):
    index = due_index(stores.make())
    await index.schedule(shop("past"), time.time() - 60)
    await index.schedule(shop("future"), time.time() + 3600)
    assert await index.claim("shopee", limit=5, lease=600) == [shop("past")]
    leased_until = await index.due_at(shop("past"))
    assert leased_until is not None and leased_until > time.time() + 300


async def test_concurrent_claimers_never_share_a_shop(stores):
    replicas = [due_index(stores.make()) for _ in range(4)]
    shops = [shop(str(n)) for n in range(300)]
    for n, key in enumerate(shops):
        await replicas[0].schedule(key, NOW - n)
    claimed: list[TokenKey] = []

    async def claimer(index):
        while batch := await index.claim("shopee", limit=7, lease=3600, now=NOW):
            claimed.extend(batch)
            await asyncio.sleep(0)

    await asyncio.gather(*(claimer(index) for index in replicas))
    assert sorted(claimed, key=str) == sorted(shops, key=str)  # each once


async def test_claim_limits_are_checked(stores):
    index = due_index(stores.make())
    for limit in (0, MAX_CLAIM + 1):
        with pytest.raises(ValueError):
            await index.claim("shopee", limit=limit, lease=1, now=NOW)


def test_state_beside_a_store_that_is_neither_redis_nor_memory_is_refused():
    class Wrapper:  # e.g. a test's fault-injecting wrapper: pass its inner store instead
        pass

    with pytest.raises(TypeError, match="Wrapper"):
        due_index(Wrapper())


async def test_a_budget_bounds_claims_per_minute_for_the_app_across_claimers(stores):
    replicas = [due_index(stores.make()) for _ in range(2)]
    for n in range(50):
        await replicas[0].schedule(shop(str(n)), NOW - 100 + n)
    first = await replicas[0].claim("shopee", limit=8, lease=600, now=NOW, per_minute=10)
    second = await replicas[1].claim("shopee", limit=8, lease=600, now=NOW, per_minute=10)
    assert (len(first), len(second)) == (8, 2)  # a full bucket holds one minute's budget
    assert await replicas[1].claim("shopee", limit=8, lease=600, now=NOW + 1, per_minute=10) == []
    refilled = await replicas[0].claim("shopee", limit=8, lease=600, now=NOW + 30, per_minute=10)
    assert len(refilled) == 5  # half a minute: half the budget
    assert [key.shop for key in first + second + refilled] == [str(n) for n in range(15)]
    other = await replicas[0].claim("other", limit=8, lease=600, now=NOW, per_minute=10)
    assert other == []  # nothing due there; its own budget untouched by shopee's claims


async def test_an_idle_claim_spends_no_budget(stores):
    index = due_index(stores.make())
    for _ in range(20):
        assert await index.claim("shopee", limit=5, lease=60, now=NOW, per_minute=5) == []
    await index.schedule(shop("1"), NOW - 1)
    assert await index.claim("shopee", limit=5, lease=60, now=NOW, per_minute=5) == [shop("1")]
