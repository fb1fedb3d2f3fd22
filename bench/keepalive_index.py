"""Redis commands a keep-alive tick costs with N scheduled shops (the due index only).

    python bench/keepalive_index.py [--shops 10000] [--due 100] [--limit 100]

Starts a private redis-server (so no one else's commands are counted), puts
N shops in one app's due index, then counts with INFO commandstats (which
also counts the commands a script runs) what these cost:

- an idle tick: one claim, nothing due;
- a busy tick: one claim handing out `--due` shops, then one schedule per
  shop (the next due time, as keep-alive writes it after each refresh);
- draining: every shop due at once, claimed `--limit` at a time.

The refresh itself (the token protocol's reads, lock and write) is the
token provider's cost and is not counted here.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authproxy.models import TokenKey
from authproxy.store.due import RedisDueIndex
from bench.proxy_get import free_port

APP = "shopee"


async def commandstats(client: aioredis.Redis) -> dict[str, tuple[int, float]]:
    """Command -> (calls, microseconds per call inside Redis)."""
    stats = await client.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): (int(value["calls"]), float(value["usec_per_call"]))
        for name, value in stats.items()
    }


async def measure(client: aioredis.Redis, label: str, work) -> None:  # type: ignore[no-untyped-def]
    await client.config_resetstat()
    started = time.perf_counter()
    result = await work()
    elapsed = time.perf_counter() - started
    stats = await commandstats(client)
    stats.pop("config|resetstat", None)
    stats.pop("config", None)
    total = sum(calls for calls, _ in stats.values())
    detail = ", ".join(f"{name} {calls} x {usec:g} us" for name, (calls, usec) in sorted(stats.items()))
    print(f"{label}: {total} commands ({detail}); {elapsed * 1000:.1f} ms from here; {result}")


async def run(url: str, shops: int, due: int, limit: int) -> None:
    client = aioredis.Redis.from_url(url)
    index = RedisDueIndex(client, "bench")
    now = time.time()
    await client.delete(index.name(APP))
    for start in range(0, shops, 1000):  # set-up, not measured
        chunk = {str(n): now + 3600 + n for n in range(start, min(start + 1000, shops))}
        await client.zadd(index.name(APP), chunk)
    print(f"{await index.size(APP)} shops scheduled in {index.name(APP)}")

    async def idle_tick() -> str:  # "now" from Redis's clock, as in production
        return f"claimed {len(await index.claim(APP, limit=limit, lease=300))}"

    await measure(client, "idle tick (nothing due)", idle_tick)
    for n in range(due):
        await index.schedule(TokenKey(APP, str(n)), now - 1)

    async def busy_tick() -> str:
        claimed = await index.claim(APP, limit=limit, lease=300)
        for key in claimed:
            await index.schedule(key, now + 7 * 86400)
        return f"claimed and rescheduled {len(claimed)}"

    await measure(client, f"busy tick ({due} due)", busy_tick)
    later = now + 10 * 86400

    async def drain() -> str:
        claims = claimed = 0
        while batch := await index.claim(APP, limit=limit, lease=300, now=later):
            claims, claimed = claims + 1, claimed + len(batch)
        return f"{claims} claims handed out {claimed} shops"

    await measure(client, f"all {shops} due, claimed {limit} at a time", drain)
    await client.aclose()


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of our own on a free port (INFO commandstats then counts only us)."""
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("needs redis-server on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        process = subprocess.Popen(
            [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
        )
        try:
            url = f"redis://127.0.0.1:{port}/0"
            for _ in range(100):
                try:
                    redis.Redis.from_url(url).ping()
                    break
                except redis.exceptions.ConnectionError:
                    time.sleep(0.05)
            print(subprocess.run([server, "--version"], capture_output=True, text=True).stdout.strip())
            yield url
        finally:
            process.terminate()
            process.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shops", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=100)
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()
    with private_redis() as url:
        asyncio.run(run(url, args.shops, args.due, args.limit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
