"""What the start-up key check costs with many shops.

    python bench/keycheck_cost.py 10000 100000

For each count: that many sealed Shopee-like records under a fresh key prefix in
the Redis at 127.0.0.1:6379/15, then `refuse_unknown_keys` (what every process
runs at start-up, and the `tokens`/`keys rotate` commands): wall and CPU time.
The records are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time

import redis

from authproxy.keyring import Keyring
from authproxy.models import Token, TokenKey, TokenRecord
from authproxy.store.codec import encode
from authproxy.store.redis import RedisStore
from authproxy.store.rekey import refuse_unknown_keys

REDIS_URL = "redis://127.0.0.1:6379/15"


def seed(client: redis.Redis, prefix: str, count: int, keyring: Keyring) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        key = TokenKey("shopee", str(10_000_000 + i))
        token = Token("sp-" + secrets.token_hex(16), 2e9, 1.7e9, "sprt-" + secrets.token_hex(16), 2e9, {})
        data = encode(TokenRecord(token=token), key, keyring)
        pipe.hset(f"{prefix}:token:{key.app}:{key.shop}", mapping={"v": 1, "data": data})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


async def check(prefix: str, keyring: Keyring) -> str:
    store = RedisStore.from_url(REDIS_URL, prefix, keyring)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        counted = await refuse_unknown_keys(store)
        assert counted is not None
        took = f"{time.perf_counter() - wall:.2f} s wall, {time.process_time() - cpu:.2f} s CPU"
        return f"{counted.records} records: start-up check {took}"
    finally:
        await store.close()


def main() -> None:
    keyring = Keyring({"k1": os.urandom(32)}, "k1")
    client = redis.Redis.from_url(REDIS_URL)
    for count in map(int, sys.argv[1:] or ["10000"]):
        prefix = f"bench-keycheck-{secrets.token_hex(4)}"
        try:
            seed(client, prefix, count, keyring)
            print(asyncio.run(check(prefix, keyring)), f"(load average {os.getloadavg()[0]:.1f})")
        finally:
            for name in client.scan_iter(match=f"{prefix}:*", count=1000):
                client.delete(name)
    client.close()


if __name__ == "__main__":
    main()
