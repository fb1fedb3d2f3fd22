"""Metrics rendering: the exposition parses, and seconds to expiry follow the clock."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from authproxy.metrics import Metrics
from authproxy.models import FakeClock


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
