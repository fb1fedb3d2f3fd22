"""Prometheus metrics: one registry per app instance, or shared files across workers.

`serve --workers N` runs N processes on one port and a scrape reaches any one
of them. The supervisor then sets PROMETHEUS_MULTIPROC_DIR to a fresh
directory before it starts the workers: prometheus-client keeps every
worker's values in files there, and `render` adds them up with its
MultiProcessCollector, so each scrape sees the whole server, whichever
worker answers it. Without that variable (one process, or tests running
several apps in one process) every Metrics has its own registry.

Seconds to expiry change by themselves, which no stored value can: workers
store each shop's expiry *timestamp* (the most recent write of a live worker
wins), and `render` derives the seconds left from it and the clock.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from authproxy.models import Clock, SystemClock

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
EXPIRY_TIMESTAMP = "authproxy_token_expiry_timestamp_seconds"
EXPIRY_LEFT = "authproxy_token_expiry_seconds"


class _WithSecondsLeft(Collector):
    """Everything `source` has, plus the seconds left derived from expiry timestamps."""

    def __init__(self, source: Collector, clock: Clock) -> None:
        self.source, self.clock = source, clock

    def collect(self) -> Iterable[Metric]:
        now = self.clock.now()
        for family in self.source.collect():
            yield family
            if family.name != EXPIRY_TIMESTAMP:
                continue
            left = GaugeMetricFamily(
                EXPIRY_LEFT,
                "Seconds until the shop's access token expires (negative: expired)",
                labels=["app", "shop"],
            )
            for sample in family.samples:
                left.add_metric([sample.labels["app"], sample.labels["shop"]], sample.value - now)
            yield left


class Metrics:
    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        # prometheus-client chose its value store when it was imported: read the same variable
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
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
        self.expires_at = Gauge(
            EXPIRY_TIMESTAMP,
            "When the shop's access token expires (Unix time, as last read or written)",
            ["app", "shop"],
            multiprocess_mode="livemostrecent",
            registry=self.registry,
        )

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

    def token_expiry(self, app: str, shop: str, expires_at: float) -> None:
        self.expires_at.labels(app, shop).set(expires_at)

    def render(self) -> bytes:
        """The exposition text: this process's registry, or every worker's files."""
        source: Collector = self.registry
        if self.multiprocess_dir is not None:
            source = CollectorRegistry()
            MultiProcessCollector(source, self.multiprocess_dir)  # type: ignore[no-untyped-call]
        page = CollectorRegistry(auto_describe=False)
        page.register(_WithSecondsLeft(source, self.clock))
        return generate_latest(page)
