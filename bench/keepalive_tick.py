"""Redis commands a keep-alive tick costs with N stored shops, refreshes included.

    python bench/keepalive_tick.py [--shops 10000] [--due 100]

Starts a private redis-server (INFO commandstats then counts only this run's
commands, those run inside scripts too) and a Shopee sandbox in this process,
stores N Shopee shops (set-up, not counted), then counts what keep-alive
itself costs, as `authproxy serve` runs it (KeepAlive.round, ShopTokens.keep_alive):

- start-up seeding with every shop missing from the due index (a first start),
  and again with all of them in it (a restart);
- a tick that refreshes `--due` idle shops (claimed in one round: concurrency
  is set to --due), per refreshed shop: the claim's share, the record read,
  the lock, the re-read under it, the `spending` mark, the compare-and-set
  write of the new pair, the next due time, the lock's release;
- an idle tick: nothing due.

Round trips are what the process sends (an EVAL is one); commands are what
Redis runs (INFO commandstats counts each command a script runs as well).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authproxy.models import Token, TokenKey, TokenRecord
from authproxy.runtime import Runtime, open_runtime
from authproxy.sandbox.shopee import ShopeeSandbox
from authproxy.settings import Settings
from authproxy.store.codec import encode
from bench.keepalive_index import commandstats, private_redis
from bench.proxy_get import free_port

APP, PARTNER_ID, KEY = "shopee", 2001887, "bench-partner-key"
IDLE = 30 * 86400.0


class Trips:
    """Round trips the proxy's Redis client sends (each command or script is one)."""

    def __init__(self, client: Any) -> None:
        self.count = 0
        send = client.execute_command

        async def counted(*args: Any, **options: Any) -> Any:
            self.count += 1
            return await send(*args, **options)

        client.execute_command = counted


async def count(client: aioredis.Redis, trips: Trips, label: str, work: Any) -> dict[str, int]:
    await client.config_resetstat()
    trips.count = 0
    started = time.perf_counter()
    result = await work()
    elapsed = time.perf_counter() - started
    stats = await commandstats(client)
    for name in ("config|resetstat", "config"):
        stats.pop(name, None)
    calls = {name: calls for name, (calls, _) in stats.items()}
    total = sum(calls.values())
    detail = ", ".join(f"{name} {n}" for name, n in sorted(calls.items()))
    print(
        f"{label}: {trips.count} round trips, {total} commands ({detail}); {elapsed * 1000:.0f} ms; {result}"
    )
    return {"trips": trips.count, "total": total}


async def store_shops(
    client: aioredis.Redis, prefix: str, sandbox: ShopeeSandbox, shops: int, due: int
) -> None:
    """N shops as stored records; the first `due` ones idle long enough to be due now."""
    now = time.time()
    for start in range(0, shops, 500):
        async with client.pipeline(transaction=False) as pipe:
            for n in range(start, min(start + 500, shops)):
                issued = now - IDLE * 0.26 if n < due else now  # 0.26: past any spread keep-alive point
                pair = (
                    sandbox.mint(str(n + 1)) if n < due else {"access_token": "a", "refresh_token": f"r{n}"}
                )
                token = Token(
                    pair["access_token"], issued + 14400, issued, pair["refresh_token"], issued + IDLE
                )
                record = TokenRecord(token=token, last_refresh=issued)
                key = TokenKey(APP, str(n + 1))
                pipe.hset(f"{prefix}:token:{APP}:{n + 1}", mapping={"v": 1, "data": encode(record, key)})
            await pipe.execute()


async def run(url: str, shops: int, due: int) -> None:
    sandbox = ShopeeSandbox(PARTNER_ID, KEY, refresh_lifetime=IDLE)
    runner = web.AppRunner(sandbox.app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    app = {
        "platform": "shopee",
        "base_url": f"http://127.0.0.1:{port}",
        "partner_id": PARTNER_ID,
        "partner_key": KEY,
    }
    settings = Settings(
        server={"store_url": url, "key_prefix": "bench", "log_level": "warning"},
        apps={APP: app},
        keepalive={"concurrency": due, "max_per_minute": 100_000},
    )
    client = aioredis.Redis.from_url(url)
    await store_shops(client, "bench", sandbox, shops, due)
    print(f"{shops} Shopee shops stored, {due} of them idle past their keep-alive point")
    async with open_runtime(settings) as runtime:
        await measure(client, runtime, shops, due, sandbox)
    await client.aclose()
    await runner.cleanup()


async def measure(
    client: aioredis.Redis, runtime: Runtime, shops: int, due: int, sandbox: ShopeeSandbox
) -> None:
    keepalive, trips = runtime.keepalive, Trips(runtime.store.client)  # type: ignore[attr-defined]
    seeded = await count(client, trips, "start-up seeding, empty index", keepalive.seed)
    print(f"  = {seeded['trips'] / shops:.2f} round trips, {seeded['total'] / shops:.2f} commands per shop")
    await count(client, trips, "start-up seeding, every shop indexed (a restart)", keepalive.seed)
    busy = await count(client, trips, f"tick refreshing {due} shops", _tick(keepalive, sandbox, expect=due))
    print(f"  = {busy['trips'] / due:.1f} round trips, {busy['total'] / due:.1f} commands per refreshed shop")
    await count(client, trips, "idle tick (nothing due)", _tick(keepalive, sandbox, expect=0))
    assert await runtime.store.get(TokenKey(APP, "1")) is not None


def _tick(keepalive: Any, sandbox: ShopeeSandbox, expect: int) -> Any:
    async def work() -> str:
        before = sandbox.stats.token_calls
        await keepalive.round()
        await keepalive.idle()
        refreshed = sandbox.stats.token_calls - before
        assert refreshed == expect, (refreshed, expect)
        return f"{refreshed} refreshed"

    return work


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shops", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=100)
    args = parser.parse_args()
    with private_redis() as url:
        asyncio.run(run(url, args.shops, args.due))
    return 0


if __name__ == "__main__":
    sys.exit(main())
