"""Real `authproxy serve` processes delivering events: a SIGKILLed replica's events are
delivered by another, and events emitted while no replica runs arrive after a restart."""

from __future__ import annotations

import collections
import os
import signal

import redis.asyncio as aioredis

from authproxy.events import Event, EventType, open_events
from authproxy.metrics import Metrics
from authproxy.models import SystemClock, TokenKey
from authproxy.settings import EventSettings
from tests.conftest import shared_store, url_of
from tests.integration.test_events_delivery import until
from tests.procs import proxy_processes
from tests.receiver import SECRET, Receiver


def events_table(url: str) -> dict[str, object]:
    return {
        "webhook_url": url + "/hook",
        "webhook_secret": SECRET,
        "poll": 0.05,
        "timeout": 1.0,
        "claim_after": 3.0,
        "retry_base": 0.05,
        "retry_max": 0.2,
    }


async def emit(shared_redis, count: int) -> list[str]:
    store = shared_store(shared_redis)
    events, _ = open_events(EventSettings(), store, Metrics(), SystemClock())
    ids = []
    for i in range(count):
        event = Event.new(EventType.RECOVERED, TokenKey("shopee", str(1000 + i)), SystemClock().now())
        await events.emit(event)
        ids.append(event.id)
    assert not events.outbox
    await store.close()
    return ids


async def holder_pid(shared_redis) -> int | None:
    """The pid in the consumer name ("<host>-<pid>-<hex>") holding the oldest pending event."""
    client = aioredis.Redis.from_url(shared_redis.url)
    try:
        pending = await client.xpending_range(f"{shared_redis.prefix}:events", "webhook", "-", "+", 1)
    finally:
        await client.aclose()
    return int(pending[0]["consumer"].decode().rsplit("-", 2)[1]) if pending else None


async def test_a_sigkilled_replicas_events_are_delivered_by_another(shared_redis, serve, tmp_path):
    receiver = Receiver()
    sections = {"events": events_table(url_of(await serve(receiver.app())))}
    async with proxy_processes({}, shared_redis, tmp_path, count=2, sections=sections) as procs:
        receiver.hang()
        ids = await emit(shared_redis, 5)
        await until(lambda: receiver.attempts >= 1, "a delivery under way")
        await until(lambda: holder_pid(shared_redis), "the delivering replica in the group's pending list")
        pid = await holder_pid(shared_redis)
        victim = next(proc for proc in procs if proc.process.pid == pid)
        os.kill(pid, signal.SIGKILL)
        victim.process.wait()
        # its delivery in flight is not accepted (as if its connection had broken first): the
        # receiver still holding its request must not make the take-over needless
        receiver.refuse_held()
        await until(lambda: set(receiver.ids()) >= set(ids), "every event, the killed replica's too")
        survivor = next(proc for proc in procs if proc is not victim)
        log = survivor.log()
    copies = collections.Counter(receiver.ids())
    assert set(copies) == set(ids) and receiver.bad == []
    assert sum(copies.values()) - len(ids) <= 1  # only the one in flight when it died may come twice
    assert "took over" in log


async def test_events_emitted_while_no_replica_runs_arrive_after_a_restart(shared_redis, serve, tmp_path):
    receiver = Receiver()
    sections = {"events": events_table(url_of(await serve(receiver.app())))}
    async with proxy_processes({}, shared_redis, tmp_path, count=1, sections=sections):
        first = await emit(shared_redis, 2)
        await until(lambda: len(receiver.events) >= 2, "the first events")
    later = await emit(shared_redis, 3)  # no replica runs now
    async with proxy_processes({}, shared_redis, tmp_path, count=1, sections=sections):
        await until(lambda: len(receiver.events) >= 5, "the events emitted while down")
    assert receiver.ids() == first + later
