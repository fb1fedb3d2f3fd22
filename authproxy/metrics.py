"""Prometheus metrics, one registry per app instance (tests run several)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

#: (app, shop, seconds to expiry) for every token this process knows
ExpirySource = Callable[[], Iterable[tuple[str, str, float]]]


class _ExpiryCollector(Collector):
    def __init__(self, source: ExpirySource) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "authproxy_token_expiry_seconds",
            "Seconds until the shop's access token expires (as this process last saw it)",
            labels=["app", "shop"],
        )
        for app, shop, seconds in self.source():
            family.add_metric([app, shop], seconds)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "authproxy_requests",
            "Proxied requests by app and status",
            ["app", "status"],
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "authproxy_upstream_seconds",
            "Upstream latency until the reply's head",
            ["app"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.refreshes = Counter(
            "authproxy_refreshes",
            "Token-endpoint calls by outcome",
            ["app", "outcome"],
            registry=self.registry,
        )
        self.lock_waits = Histogram(
            "authproxy_lock_wait_seconds",
            "Time spent waiting for a refresh lock or its result",
            registry=self.registry,
        )
        self.replays = Counter(
            "authproxy_replays",
            "Requests replayed after an invalid-token reply",
            ["app"],
            registry=self.registry,
        )

    def watch_expiry(self, source: ExpirySource) -> None:
        self.registry.register(_ExpiryCollector(source))

    def request(self, app: str, status: int) -> None:
        self.requests.labels(app, str(status)).inc()

    def upstream(self, app: str, seconds: float) -> None:
        self.upstream_seconds.labels(app).observe(seconds)

    def refresh(self, app: str, outcome: str) -> None:
        self.refreshes.labels(app, outcome).inc()

    def lock_wait(self, seconds: float) -> None:
        self.lock_waits.observe(seconds)

    def replay(self, app: str) -> None:
        self.replays.labels(app).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
