"""What WAIT costs a new token pair: durable puts with and without it, on a master with one
replica (a private Sentinel set: master, replica, three Sentinels).

    python bench/store_wait.py [--writes 2000]

Prints the mean and p99 latency of a durable put (compare-and-set) with
store_wait_replicas = 0 and = 1, written one after another (as refreshes are).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authproxy.models import Token, TokenKey, TokenRecord
from authproxy.settings import StoreSettings
from authproxy.store import ANY_VERSION
from authproxy.store.redis import RedisStore
from tests.redis_topology import SentinelSet


async def timed_puts(url: str, replicas: int, writes: int) -> list[float]:
    store = RedisStore.from_settings(StoreSettings(url=url, key_prefix="bench", wait_replicas=replicas))
    record = TokenRecord(token=Token("at-bench", 2e9, 0.0, "rt-bench"))
    took = []
    try:
        for n in range(writes):
            started = time.perf_counter()
            await store.put(TokenKey("sp", str(n % 100)), record, expected_version=ANY_VERSION, durable=True)
            took.append(time.perf_counter() - started)
    finally:
        await store.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        sentinels = SentinelSet(Path(directory))
        try:
            for replicas in (0, 1, 0, 1):  # twice each: the first round warms up
                took = sorted(asyncio.run(timed_puts(sentinels.url, replicas, args.writes)))
                mean, p99 = statistics.mean(took) * 1000, took[int(len(took) * 0.99)] * 1000
                print(f"store_wait_replicas={replicas}: mean {mean:.3f} ms, p99 {p99:.3f} ms per durable put")
        finally:
            sentinels.stop()


if __name__ == "__main__":
    main()
