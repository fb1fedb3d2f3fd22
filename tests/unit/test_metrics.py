"""Metrics rendering: the exposition parses, and seconds to expiry follow the clock."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from authproxy.events import Event, EventType, open_events
from authproxy.metrics import Metrics
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
