"""Prometheus metrics for `GET /metrics`, with prometheus-client.

One `CollectorRegistry` per runtime, not the library's global one: tests (and anything
embedding relay) run several apps in one process, and each must count only its own traffic.

Instrumentation stays off the inner loops: the store reports once per group commit, the
dispatch log once per write (a batch of lines), ingestion once per committed batch; only the
latency histogram takes one observation per delivered event, because it needs each event's
age. Counters add to plain dicts and reach prometheus-client when scraped (`flush`): a
tracking hit is a request and an event, and the library's locked `inc` showed up in its cost. The backlog gauges come from `store.stats()`, which scans the deliveries table, so they
are refreshed at scrape time and at most once per `STATS_TTL_S`, however often anyone asks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder

from .models import Claimed, NewEvent
from .store import DestinationStats, Stats, Store

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("relay.metrics")

# No `<name>_created` series: they double the output and no dashboard uses them.
disable_created_metrics()

STATS_TTL_S = 1.0
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)
COMMIT_S_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class Metrics:
    """The counters relay keeps, and the hooks that move them."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.events = Counter(
            "relay_events_ingested",
            "Events committed, by event_type and source (api, pixel, click, unsub, signup).",
            ["event_type", "source"],
            registry=r,
        )
        self.duplicate_events = Counter(
            "relay_events_duplicate",
            "Events not stored again because their id was already stored, by source.",
            ["source"],
            registry=r,
        )
        self.deliveries = Counter(
            "relay_deliveries",
            "Deliveries by destination and outcome (delivered, retry, dead, leased);"
            " a pull client's ack counts as delivered.",
            ["destination", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "relay_delivery_latency_seconds",
            "From the event's receipt to its successful delivery.",
            ["destination"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "relay_http_requests",
            "HTTP requests by route pattern and status.",
            ["route", "status"],
            registry=r,
        )
        self.commit_size = Histogram(
            "relay_commit_batch_size",
            "Writes (requests, claims, acks, ...) grouped into one SQLite transaction.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit_events = Histogram(
            "relay_commit_events",
            "Events inserted by one group commit (commits without ingest are not counted).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit_seconds = Histogram(
            "relay_commit_seconds",
            "Duration of one group commit, BEGIN to COMMIT.",
            buckets=COMMIT_S_BUCKETS,
            registry=r,
        )
        per_dest = ["destination"]
        self.backlog = Gauge("relay_backlog", "Deliveries pending or leased.", per_dest, registry=r)
        self.oldest = Gauge(
            "relay_oldest_pending_seconds",
            "Age of the oldest pending delivery (0: none).",
            per_dest,
            registry=r,
        )
        self.dead = Gauge(
            "relay_dead", "Dead deliveries kept (until retention).", per_dest, registry=r
        )
        self.circuit = Gauge(
            "relay_circuit_open",
            "1 while the destination's circuit breaker holds its backlog back.",
            per_dest,
            registry=r,
        )
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        # Per-request counts wait in plain dicts and reach prometheus-client at scrape time
        # (`flush`): a library `inc` takes a lock, and these move on every tracking hit.
        self._pending: dict[tuple[Any, tuple[str, ...]], float] = {}
        self._requests: dict[tuple[Any, int], int] = {}  # (aiohttp resource, status) -> n
        self._latencies: list[tuple[str, float]] = []  # (destination, received → delivered s)
        self._stats: Stats | None = None
        self._stats_at = 0.0
        self._stats_lock = asyncio.Lock()

    # -- hooks (called once per batch) -----------------------------------------------------

    def ingested(self, batch: list[NewEvent], source: str) -> None:
        if not batch:
            return
        if len(batch) == 1:
            key = (self.events, (batch[0].event_type, source))
            self._pending[key] = self._pending.get(key, 0) + 1
            return
        for etype, n in Tally(e.event_type for e in batch).items():
            self._inc(self.events, (etype, source), n)

    def duplicates(self, n: int, source: str) -> None:
        self._inc(self.duplicate_events, (source,), n)

    def settled(self, destination: str, tally: dict[str, int]) -> None:
        """Deliveries settled, by outcome (a pull ack arrives as delivered); `Outcomes` tells."""
        for outcome, n in tally.items():
            self._inc(self.deliveries, (destination, outcome), n)

    def delivered(self, destination: str, claims: list[Claimed], now: float) -> None:
        # Observed at scrape time too (`flush`); a long gap between scrapes flushes early.
        self._latencies.extend((destination, now - c.created_at) for c in claims)
        if len(self._latencies) > 50_000:
            self.flush()

    def committed(self, writes: int, events: int, seconds: float) -> None:
        self.commit_size.observe(writes)
        self.commit_seconds.observe(seconds)
        if events:
            self.commit_events.observe(events)

    def request(self, request: web.Request, status: int) -> None:
        # Counted by resource (one per route: cardinality stays bounded); `flush` names it.
        key = (request.match_info.route.resource, status)
        requests = self._requests
        requests[key] = requests.get(key, 0) + 1

    def flush(self) -> None:
        """Move the counts waiting in plain dicts into the prometheus-client metrics."""
        requests, self._requests = self._requests, {}
        for (resource, status), n in requests.items():
            # The route's pattern (`/c/{token}`), never the raw path.
            route = resource.canonical if resource is not None else "unmatched"
            self._child(self.requests, (route, str(status))).inc(n)
        pending, self._pending = self._pending, {}
        for (metric, labels), n in pending.items():
            self._child(metric, labels).inc(n)
        latencies, self._latencies = self._latencies, []
        for destination, seconds in latencies:
            self._child(self.latency, (destination,)).observe(max(0.0, seconds))

    def _child(self, metric: Any, labels: tuple[str, ...]) -> Any:
        """`metric.labels(...)`, cached: the library's lookup takes a lock and builds a tuple."""
        child = self._children.get((metric, labels))
        if child is None:
            child = self._children[(metric, labels)] = metric.labels(*labels)
        return child

    def _inc(self, metric: Any, labels: tuple[str, ...], n: float = 1) -> None:
        key = (metric, labels)
        self._pending[key] = self._pending.get(key, 0) + n

    # -- scrape ----------------------------------------------------------------------------

    async def stats(self, store: Store) -> Stats:
        """`store.stats()`, at most once per STATS_TTL_S (scrapes and the systemd STATUS)."""
        async with self._stats_lock:
            if self._stats is None or time.monotonic() - self._stats_at >= STATS_TTL_S:
                self._stats = await store.stats()
                self._stats_at = time.monotonic()
            return self._stats

    async def scrape(self, runtime: Runtime, accept: str | None) -> tuple[bytes, str]:
        """The exposition (text format, or OpenMetrics if asked) and its content type."""
        try:
            self._set_backlog(await self.stats(runtime.store), runtime)
        except Exception as exc:  # storage trouble: serve the last values, say so in the log
            log.warning("metrics: cannot read backlog: %s", exc)
        self._set_circuits(runtime)
        self.flush()
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def _set_backlog(self, stats: Stats, runtime: Runtime) -> None:
        for gauge in (self.backlog, self.oldest, self.dead):
            gauge.clear()
        for name in sorted(set(runtime.config.destinations) | set(stats.destinations)):
            d = stats.destinations.get(name) or DestinationStats()
            self.backlog.labels(name).set(d.pending + d.leased)
            self.oldest.labels(name).set(d.oldest_pending_s or 0.0)
            self.dead.labels(name).set(d.dead)

    def _set_circuits(self, runtime: Runtime) -> None:
        self.circuit.clear()
        for name, dispatcher in runtime.dispatchers.items():
            self.circuit.labels(name).set(int(dispatcher.circuit.is_open))
