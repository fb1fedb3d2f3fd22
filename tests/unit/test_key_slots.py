"""Every Lua script touches one Cluster slot: the keys each script is given hash to the same
slot (computed here as Redis does, CRC16 of the hash tag), and all keys of one shop share
the shop's slot, so a shop's record, lock, call slots, marks and rate buckets live together."""

from __future__ import annotations

from typing import Any, cast

import pytest
from redis.crc import key_slot

from authproxy.models import TokenKey
from authproxy.settings import StoreSettings
from authproxy.store import redis_rates
from authproxy.store.due import RedisDueIndex
from authproxy.store.marks import RedisWarningMarks
from authproxy.store.names import legacy_key, parse_shop_key, shop_key
from authproxy.store.rates import RateKey
from authproxy.store.redis import RedisStore
from authproxy.store.redis_rates import RedisRates

SHOPS = [TokenKey("sp", "1001"), TokenKey("tt-eu", "7493:cipher"), TokenKey("a.b", "{x}"), TokenKey("z", "")]


class NoClient:
    """Names need no connection; register_script is all RedisRates asks of a client."""

    def register_script(self, script: str) -> object:
        return script


def slots(names: list[str]) -> set[int]:
    return {key_slot(name.encode()) for name in names}


def stores() -> tuple[RedisStore, RedisWarningMarks, RedisRates, RedisDueIndex]:
    client = cast(Any, NoClient())
    return (
        RedisStore(client, StoreSettings(key_prefix="ap")),
        RedisWarningMarks(client, "ap"),
        RedisRates(client, "ap"),
        RedisDueIndex(client, "ap"),
    )


@pytest.mark.parametrize("key", SHOPS[:3])
def test_every_key_of_a_shop_is_in_one_slot(key: TokenKey) -> None:
    store, marks, rates, _ = stores()
    names = [
        store._name("token", key),  # COMPARE_AND_SET, MARK_SPENDING (1 key)
        store.lock(key, 1).name,  # ACQUIRE_LOCK, COMPARE_AND_DELETE (1 key)
        *store._slot_names(key),  # ACQUIRE_SLOT (4 keys), RENEW_SLOT
        marks.name(key),  # MARK (1 key)
        rates.name(RateKey(key.app, key.shop, "orders")),  # ADMIT, LEARN, REFUND (1 key)
    ]
    assert len(slots(names)) == 1, names
    if "}" not in key.shop:  # else Redis hashes up to the first "}": still one slot
        assert slots(names) == {key_slot(f"{key.app}:{key.shop}".encode())}


def test_the_multi_key_scripts_are_single_slot() -> None:
    store, _, rates, due = stores()
    for key in SHOPS:
        assert len(slots(store._slot_names(key))) == 1  # ACQUIRE_SLOT
        assert len(slots([due.name(key.app), due.budget_name(key.app)])) == 1  # CLAIM
        assert len(slots([rates.name(RateKey(key.app, None, "x")), due.name(key.app)])) == 1  # per app


def test_shops_spread_over_slots() -> None:
    store = stores()[0]
    names = [store._name("token", TokenKey("sp", str(n))) for n in range(200)]
    assert len(slots(names)) > 150


def test_names_round_trip_and_legacy_names_are_recognised() -> None:
    for key in SHOPS[:2]:
        assert parse_shop_key("ap", "token", shop_key("ap", "token", key)) == (key, False)
        assert parse_shop_key("ap", "token", legacy_key("ap", "token", key)) == (key, True)


def test_bucket_names_are_remembered_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_rates, "NAMES_MAX", 2)
    rates = stores()[2]
    keys = [RateKey("sp", "1001", "orders"), RateKey("sp", None, "*"), RateKey("sp", "1002", "orders")]
    expected = ["ap:rate:{sp:1001}:orders", "ap:rate:{sp}:*", "ap:rate:{sp:1002}:orders"]
    for _ in range(2):  # made, then remembered (or made again once forgotten)
        assert [rates.name(key) for key in keys] == expected
        assert len(rates._names) <= 2
