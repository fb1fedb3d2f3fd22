"""Redis commands one idle event-delivery task costs (a replica with a webhook, no events).

    python bench/events_idle.py [--seconds 60]

Starts a private redis-server, runs one Delivery (default [events] timings)
for the given time and prints INFO commandstats' counts per command.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from authproxy.events import open_events
from authproxy.metrics import Metrics
from authproxy.models import SystemClock
from authproxy.settings import EventSettings
from authproxy.store.redis import RedisStore
from bench.keepalive_index import commandstats, private_redis


async def run(url: str, seconds: float) -> None:
    store = RedisStore.from_url(url, "bench")
    settings = EventSettings(webhook_url="http://127.0.0.1:9/hook", webhook_secret="s" * 16)
    _, delivery = open_events(settings, store, Metrics(), SystemClock())
    await delivery.start()
    await asyncio.sleep(1)  # joined the group, first round done
    await store.client.config_resetstat()
    await asyncio.sleep(seconds)
    stats = await commandstats(store.client)
    await delivery.stop()
    await store.close()
    stats.pop("config|resetstat", None)
    total = sum(calls for calls, _ in stats.values())
    detail = ", ".join(f"{name} {calls}" for name, (calls, _) in sorted(stats.items()))
    print(f"{seconds:g} s idle: {total} commands ({detail}): {total * 60 / seconds:.0f} per minute")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with private_redis() as url:
        asyncio.run(run(url, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
