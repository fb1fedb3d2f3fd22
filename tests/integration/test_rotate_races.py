"""`keys rotate` meeting other writers: it never overwrites a newer record, and waits out a refresh.

On fakeredis and real Redis. The writer that lands between rotation's read and
its write is a store whose `get` lets a "refresh" write a new pair right after
reading (as a replica would), once.
"""

from __future__ import annotations

import asyncio
import dataclasses

from authproxy.keyring import Keyring
from authproxy.models import Token, TokenKey, TokenRecord
from authproxy.store.redis import RedisStore
from authproxy.store.rekey import Rotation, census, rotate
from tests.conftest import StoreFactory

K1, K2 = bytes(range(32)), bytes(range(50, 82))
OLD = Keyring({"k1": K1}, "k1")
BOTH = Keyring({"k1": K1, "k2": K2}, "k2")


def token(n: int) -> Token:
    return Token(f"at-{n}", 2e9, 0.0, f"rt-{n}", None)


async def seed(store: RedisStore, shops: int) -> list[TokenKey]:
    keys = [TokenKey("sp", str(1000 + i)) for i in range(shops)]
    for key in keys:
        await store.put(key, TokenRecord(token=token(0)), expected_version=0)
    return keys


class RefreshedMeanwhile(RedisStore):
    """Right after rotation reads `victim`, a refresh elsewhere stores a new pair."""

    victim: TokenKey | None = None

    async def get(self, key: TokenKey) -> TokenRecord | None:
        record = await super().get(key)
        if key == self.victim and record is not None:
            self.victim = None
            writer = RedisStore(self.client, self.settings, OLD)  # a replica still sealing with k1
            newer = dataclasses.replace(record, token=token(1))
            assert await writer.put(key, newer, expected_version=record.version) is not None
        return record


async def test_a_write_between_read_and_write_is_read_again_never_overwritten(redis_stores: StoreFactory):
    keys = await seed(redis_stores.make(OLD), 20)  # type: ignore[arg-type]
    plain = redis_stores.make(BOTH)
    assert isinstance(plain, RedisStore)
    store = RefreshedMeanwhile(plain.client, plain.settings, BOTH)
    store.victim = keys[7]
    done = await rotate(store, rate=1000, batch=5)
    assert done.conflicts == 1 and done.rewritten == 20 and done.left.records == 0
    kept = await store.get(keys[7])
    assert kept is not None and kept.token == token(1)  # the newer pair, not rotation's stale read
    counted = await census(store)
    assert counted.by_key == {"k2": 20}


async def test_a_record_whose_refresh_lock_is_held_is_rotated_in_a_later_pass(redis_stores: StoreFactory):
    keys = await seed(redis_stores.make(OLD), 10)  # type: ignore[arg-type]
    store = redis_stores.make(BOTH)
    held = store.lock(keys[3], 30)
    assert await held.acquire()  # a refresh under way
    seen: list[Rotation] = []
    rotation = asyncio.create_task(rotate(store, rate=1000, batch=4, progress=seen.append))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not (seen and seen[-1].busy):
        assert loop.time() < deadline and not rotation.done()
        await asyncio.sleep(0.01)
    await held.release()  # the refresh is over
    done = await rotation
    assert done.busy >= 1 and done.rewritten == 10 and done.left.records == 0
    assert (await census(store)).by_key == {"k2": 10}  # type: ignore[arg-type]


async def test_records_under_the_active_key_are_left_alone(redis_stores: StoreFactory):
    store = redis_stores.make(BOTH)
    keys = await seed(store, 5)  # type: ignore[arg-type]
    versions = [(await store.get(key)).version for key in keys]  # type: ignore[union-attr]
    done = await rotate(store, rate=1000)
    assert (done.rewritten, done.already) == (0, 5)
    assert [(await store.get(key)).version for key in keys] == versions  # type: ignore[union-attr]
