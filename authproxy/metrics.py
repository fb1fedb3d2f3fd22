"""Prometheus metrics: one registry per app instance, or shared files across workers.

`serve --workers N` runs N processes on one port and a scrape reaches any one
of them. The supervisor then sets PROMETHEUS_MULTIPROC_DIR to a fresh
directory before it starts the workers: prometheus-client keeps every
worker's values in files there, and `render` adds them up with its
MultiProcessCollector, so each scrape sees the whole server, whichever
worker answers it. Without that variable (one process, or tests running
several apps in one process) every Metrics has its own registry.

The metrics every request updates (its count, its upstream latency, and for a
shaped call its rate-limit wait) are tallied in plain dicts and added to
prometheus-client's values at most once a second (`FLUSH_EVERY`) and before
every scrape: an update through
prometheus-client costs 1-3 us (a lock, checks, in `--workers` mode a write to
its mmap file), about 1-2 % of a proxied request. In `--workers` mode a scrape
may thus miss the last second of the workers that do not answer it.

Seconds to expiry change by themselves, which no stored value can: workers
store each shop's expiry *timestamp* (the most recent write of a live worker
wins), and `render` derives the seconds left from it and the clock.
"""

from __future__ import annotations

import asyncio
import bisect
import os
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from authproxy.models import Clock, SystemClock

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
WAIT_BUCKETS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
EXPIRY_TIMESTAMP = "authproxy_token_expiry_timestamp_seconds"
EXPIRY_LEFT = "authproxy_token_expiry_seconds"
#: seconds the per-request tallies wait before they are added to the exposed values
FLUSH_EVERY = 1.0


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
        self.rate_waits = Histogram(
            "authproxy_ratelimit_wait_seconds",
            "Time a call waited for its rate-limit turn, by app and operation",
            ["app", "operation"],
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.throttled = Counter(
            "authproxy_upstream_throttled",
            "Replies in which the platform refused a call for its rate limit (429...)",
            ["app"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "authproxy_rate_limited",
            "Calls answered 429 rate_limited by authproxy (nothing sent), by scope",
            ["app", "scope"],
            registry=self.registry,
        )
        self.learned_rates = Gauge(
            "authproxy_ratelimit_learned_rate",
            "Rate (calls/s) the platform last announced for a shop's operation",
            ["app", "operation"],
            multiprocess_mode="livemostrecent",
            registry=self.registry,
        )
        self.unconfirmed_writes = Counter(
            "authproxy_store_unconfirmed_writes",
            "New token pairs the Redis master took but its replicas did not confirm in time (WAIT):"
            " kept by the process and written again until confirmed",
            ["app"],
            registry=self.registry,
        )
        self.decrypt_failures = Counter(
            "authproxy_decrypt_failures",
            "Stored secrets that did not decrypt (unknown_key, mismatch, malformed)",
            ["app", "reason"],
            registry=self.registry,
        )
        self.expires_at = Gauge(
            EXPIRY_TIMESTAMP,
            "When the shop's access token expires (Unix time, as last read or written)",
            ["app", "shop"],
            multiprocess_mode="livemostrecent",
            registry=self.registry,
        )

        self._events_metrics()
        # the children the request path updates, looked up once (labels() costs more than inc())
        self._by_status: dict[tuple[str, int], Counter] = {}
        self._by_app: dict[str, Histogram] = {}
        #: what request(), upstream() and rate_wait() tallied since the last flush, per child
        self._counts: dict[Counter, int] = {}
        self._observations: dict[Histogram, list[float]] = {}
        self._flush: asyncio.TimerHandle | None = None
        self._flush_loop: asyncio.AbstractEventLoop | None = None  # the loop its timer is on
        self._by_operation: dict[tuple[str, str], Histogram] = {}
        self.shops = Gauge(
            "authproxy_shops",
            "Shops by app and status (ok, expiring, expired, cooling_down, needs_reauthorization)",
            ["app", "status"],
            multiprocess_mode="livemostrecent",
            registry=self.registry,
        )
        self._shop_statuses: dict[str, set[str]] = {}
        self.keepalives = Counter(
            "authproxy_keepalive_checks",
            "Shops keep-alive looked at, by app and outcome (refreshed, not_due, busy, failed, ...)",
            ["app", "outcome"],
            registry=self.registry,
        )

    def _events_metrics(self) -> None:
        self.events = Counter(
            "authproxy_events", "Shop events emitted, by type", ["type"], registry=self.registry
        )
        self.event_deliveries = Counter(
            "authproxy_event_deliveries",
            "Webhook delivery attempts by outcome (delivered, failed: retried later)",
            ["outcome"],
            registry=self.registry,
        )
        self.events_dropped = Counter(
            "authproxy_events_dropped",
            "Events given up on, by reason (expired: undelivered for events.retry_for; malformed; "
            "outbox_full and shutdown: never reached the store)",
            ["reason"],
            registry=self.registry,
        )
        self.events_undelivered = Gauge(
            "authproxy_events_undelivered",
            "Events in the stream the webhook has not acknowledged yet",
            multiprocess_mode="livemostrecent",
            registry=self.registry,
        )
        self.events_held = Gauge(
            "authproxy_events_held",
            "Events held in this process until the store takes them",
            multiprocess_mode="livesum",
            registry=self.registry,
        )

    def request(self, app: str, status: int) -> None:
        """Count a request (label values are bounded: configured apps or "-", HTTP statuses)."""
        child = self._by_status.get((app, status))
        if child is None:
            child = self._by_status[app, status] = self.requests.labels(app, str(status))
        self._counts[child] = self._counts.get(child, 0) + 1
        if self._flush_loop is None or self._flush_loop.is_closed():  # no timer that will fire
            self._flush_soon()

    def upstream(self, app: str, seconds: float) -> None:
        """Observe an upstream call's latency (configured apps only)."""
        child = self._by_app.get(app)
        if child is None:
            child = self._by_app[app] = self.upstream_seconds.labels(app)
        self._observe_soon(child, LATENCY_BUCKETS, seconds)

    def _observe_soon(self, child: Histogram, bounds: tuple[float, ...], seconds: float) -> None:
        """Tally an observation of a histogram child with these bucket bounds (flushed as
        request counts are: observe() takes a lock per bucket and the sum, per call)."""
        tally = self._observations.get(child)
        if tally is None:
            tally = self._observations[child] = [0.0] * (len(bounds) + 2)  # buckets, +Inf, sum
        tally[bisect.bisect_left(bounds, seconds)] += 1  # the first bucket with le >= it
        tally[-1] += seconds
        if self._flush_loop is None or self._flush_loop.is_closed():  # no timer that will fire
            self._flush_soon()

    def flush(self) -> None:
        """Add the tallies of `request`, `upstream` and `rate_wait` to the exposed values, now."""
        if self._flush is not None:
            self._flush.cancel()
        self._flush = self._flush_loop = None
        counts, self._counts = self._counts, {}
        for counter, count in counts.items():
            counter.inc(count)
        observations, self._observations = self._observations, {}
        for histogram, tally in observations.items():
            _add_observations(histogram, tally)

    def _flush_soon(self) -> None:
        """A flush FLUSH_EVERY from now (or at once without an event loop; a timer whose
        loop has closed will never fire, and is replaced)."""
        try:
            self._flush_loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush = self._flush_loop.call_later(FLUSH_EVERY, self.flush)

    def refresh(self, app: str, outcome: str) -> None:
        self.refreshes.labels(app, outcome).inc()

    def lock_wait(self, seconds: float) -> None:
        self.lock_waits.observe(seconds)

    def replay(self, app: str) -> None:
        self.replays.labels(app).inc()

    def rate_wait(self, app: str, operation: str, seconds: float) -> None:
        child = self._by_operation.get((app, operation))
        if child is None:  # operations are a platform's bounded labels
            child = self._by_operation[app, operation] = self.rate_waits.labels(app, operation)
        self._observe_soon(child, WAIT_BUCKETS, seconds)

    def upstream_throttled(self, app: str) -> None:
        self.throttled.labels(app).inc()

    def rejected(self, app: str, scope: str) -> None:
        self.rate_limited.labels(app, scope).inc()

    def learned_rate(self, app: str, operation: str, rate: float) -> None:
        self.learned_rates.labels(app, operation).set(rate)

    def unconfirmed_write(self, app: str) -> None:
        self.unconfirmed_writes.labels(app).inc()

    def decrypt_failure(self, app: str, reason: str) -> None:
        self.decrypt_failures.labels(app, reason).inc()

    def token_expiry(self, app: str, shop: str, expires_at: float) -> None:
        self.expires_at.labels(app, shop).set(expires_at)

    def keepalive(self, app: str, outcome: str) -> None:
        self.keepalives.labels(app, outcome).inc()

    def event(self, kind: str) -> None:
        self.events.labels(kind).inc()

    def event_delivery(self, outcome: str) -> None:
        self.event_deliveries.labels(outcome).inc()

    def event_dropped(self, reason: str, count: int = 1) -> None:
        self.events_dropped.labels(reason).inc(count)

    def shops_by_status(self, app: str, counts: Mapping[str, int]) -> None:
        """Set an app's shop count per status; a status seen before and absent now reads 0."""
        seen = self._shop_statuses.setdefault(app, set())
        seen.update(counts)
        for status in seen:
            self.shops.labels(app, status).set(counts.get(status, 0))

    def render(self) -> bytes:
        """The exposition text: this process's registry, or every worker's files."""
        self.flush()
        source: Collector = self.registry
        if self.multiprocess_dir is not None:
            source = CollectorRegistry()
            MultiProcessCollector(source, self.multiprocess_dir)  # type: ignore[no-untyped-call]
        page = CollectorRegistry(auto_describe=False)
        page.register(_WithSecondsLeft(source, self.clock))
        return generate_latest(page)


def _add_observations(histogram: Histogram, tally: list[float]) -> None:
    """Add a tally (a count per bucket of the histogram's bounds, then +Inf, then the sum) to a
    histogram child, as that many `observe` calls would. prometheus-client has no public call
    for it: this uses the child's own values (`_buckets`: one per bucket, not cumulative;
    `_sum`), as `observe` does in 0.20-0.26; test_metrics fails if they change."""
    buckets, total = tally[:-1], tally[-1]
    for value, count in zip(histogram._buckets, buckets, strict=True):
        if count:
            value.inc(count)
    histogram._sum.inc(total)
