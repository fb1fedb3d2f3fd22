"""Metrics rendering: the exposition parses, and seconds to expiry follow the clock."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from authproxy.events import Event, EventType, open_events
from authproxy.metrics import FLUSH_EVERY, LATENCY_BUCKETS, WAIT_BUCKETS, Metrics
from authproxy.models import FakeClock, TokenKey
from authproxy.settings import EventSettings
from authproxy.store.memory import MemoryStore


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_seconds_to_expiry_are_derived_at_scrape_time():
    clock = FakeClock()
    metrics = Metrics(clock)
    metrics.token_expiry("gfg", "shop1", clock.now() + 300)
    key = ("authproxy_token_expiry_seconds", (("app", "gfg"), ("shop", "shop1")))
    assert samples(metrics)[key] == 300
    clock.advance(120)
    assert samples(metrics)[key] == 180
    metrics.token_expiry("gfg", "shop1", clock.now() + 3600)  # refreshed: the newest expiry counts
    assert samples(metrics)[key] == 3600
    clock.advance(4000)
    assert samples(metrics)[key] == -400


def test_each_instance_counts_on_its_own():
    first, second = Metrics(FakeClock()), Metrics(FakeClock())
    first.request("gfg", 200)
    first.refresh("gfg", "ok")
    first.replay("gfg")
    first.upstream("gfg", 0.02)
    first.lock_wait(0.5)
    found = samples(first)
    assert found[("authproxy_requests_total", (("app", "gfg"), ("status", "200")))] == 1
    assert found[("authproxy_refreshes_total", (("app", "gfg"), ("outcome", "ok")))] == 1
    assert found[("authproxy_replays_total", (("app", "gfg"),))] == 1
    assert found[("authproxy_upstream_seconds_bucket", (("app", "gfg"), ("le", "0.025")))] == 1
    assert found[("authproxy_upstream_seconds_bucket", (("app", "gfg"), ("le", "0.01")))] == 0
    assert found[("authproxy_lock_wait_seconds_sum", ())] == 0.5
    assert ("authproxy_requests_total", (("app", "gfg"), ("status", "200"))) not in samples(second)


def test_tallied_latencies_read_as_observed_ones():
    """request(), upstream() and rate_wait() tally; the exposed histograms are what observe() would make
    of the same values (bounds included: a bucket counts values <= its le)."""
    values = [0.0, 0.004, 0.005, 0.0051, 0.01, 0.3, 1, 59.9, 60, 61, 1e9, *LATENCY_BUCKETS, *WAIT_BUCKETS]
    metrics = Metrics(FakeClock())
    reg = CollectorRegistry()
    observed = Histogram("authproxy_upstream_seconds", "", ["app"], buckets=LATENCY_BUCKETS, registry=reg)
    waits = Histogram(
        "authproxy_ratelimit_wait_seconds", "", ["app", "operation"], buckets=WAIT_BUCKETS, registry=reg
    )
    for value in values:
        metrics.upstream("gfg", value)
        observed.labels("gfg").observe(value)
        metrics.rate_wait("gfg", "orders", value)
        waits.labels("gfg", "orders").observe(value)
    expected = {}
    for family in text_string_to_metric_families(generate_latest(reg).decode()):
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                expected[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    found = samples(metrics)
    assert {key: found[key] for key in expected} == expected


async def test_tallies_reach_the_values_within_a_second_without_a_scrape():
    """--workers mode: a scrape reads every worker's values, and only its own worker flushes."""
    metrics = Metrics(FakeClock())
    metrics.request("gfg", 200)
    metrics.upstream("gfg", 0.02)
    child = metrics.requests.labels("gfg", "200")
    assert child._value.get() == 0  # tallied, not added yet
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2 * FLUSH_EVERY
    while child._value.get() == 0:
        assert loop.time() < deadline, "the tally was not flushed within FLUSH_EVERY"
        await asyncio.sleep(0.05)  # polling the value, bounded
    assert child._value.get() == 1
    assert metrics.upstream_seconds.labels("gfg")._sum.get() == 0.02


def test_a_flush_timer_left_on_a_closed_loop_is_replaced():
    metrics = Metrics(FakeClock())
    child = metrics.requests.labels("gfg", "200")

    async def count_one() -> None:
        metrics.request("gfg", 200)

    async def count_one_and_wait() -> None:
        await count_one()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * FLUSH_EVERY
        while child._value.get() < 2:
            assert loop.time() < deadline, "no flush on the second loop"
            await asyncio.sleep(0.05)  # polling the value, bounded

    asyncio.run(count_one())  # its loop closes before the timer fires
    assert child._value.get() == 0
    asyncio.run(count_one_and_wait())
    assert child._value.get() == 2


def test_odd_shop_names_stay_parseable():
    metrics = Metrics(FakeClock())
    shop = 'we"ird\\shop\nname'
    metrics.token_expiry("gfg", shop, FakeClock().now() + 10)
    key = ("authproxy_token_expiry_seconds", (("app", "gfg"), ("shop", shop)))
    assert samples(metrics)[key] == 10


async def test_events_are_counted_by_type_and_held_ones_gauged():
    metrics = Metrics()
    events, _ = open_events(EventSettings(), MemoryStore(), metrics, FakeClock())
    for kind in (EventType.NEEDS_REAUTHORIZATION, EventType.NEEDS_REAUTHORIZATION, EventType.RECOVERED):
        await events.emit(Event.new(kind, TokenKey("shopee", "1"), 0.0))
    found = samples(metrics)
    assert found[("authproxy_events_total", (("type", "shop.needs_reauthorization"),))] == 2
    assert found[("authproxy_events_total", (("type", "shop.recovered"),))] == 1
    assert found[("authproxy_events_held", ())] == 0


def test_shops_by_status_stays_low_cardinality_and_zeroes_what_is_gone():
    metrics = Metrics()
    metrics.shops_by_status("shopee", {"ok": 9998, "needs_reauthorization": 2})
    metrics.shops_by_status("shopee", {"ok": 10000})
    found = samples(metrics)
    assert found[("authproxy_shops", (("app", "shopee"), ("status", "ok")))] == 10000
    assert found[("authproxy_shops", (("app", "shopee"), ("status", "needs_reauthorization")))] == 0
    assert {labels for name, labels in found if name == "authproxy_shops"} == {
        (("app", "shopee"), ("status", "ok")),
        (("app", "shopee"), ("status", "needs_reauthorization")),
    }
