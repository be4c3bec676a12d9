"""Prometheus metrics: counters and histograms updated per request, gauges read at scrape time.

A private CollectorRegistry (no process-global state), exposed through the ``metrics`` op
(``hs metrics``) and, when ``daemon.metrics_port`` is set, over HTTP on 127.0.0.1 only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from hotswapd.pipeline.cache import EmbeddingCache
    from hotswapd.core.registry import Registry
    from hotswapd.core.switching import Switchboard

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _LiveState(Collector):
    """Gauges computed from the registry and switchboard when scraped, so they are never stale."""

    def __init__(self, registry: Registry, switchboard: Switchboard, cache: EmbeddingCache) -> None:
        self._registry = registry
        self._switchboard = switchboard
        self._cache = cache

    def collect(self) -> Iterator[GaugeMetricFamily]:
        active = GaugeMetricFamily("hotswapd_active_version", "1 for each model's active version", labels=["model", "version"])
        share = GaugeMetricFamily("hotswapd_rollout_share_percent", "Share of requests routed to each version", labels=["model", "version"])
        memory = GaugeMetricFamily("hotswapd_model_memory_bytes", "RSS growth measured when the version loaded", labels=["model", "version"])
        load = GaugeMetricFamily("hotswapd_load_seconds", "How long the version took to load", labels=["model", "version"])
        snap = self._registry.published.current  # one moment: routes and loaded versions agree
        for model, route in sorted(snap.routes.items()):
            active.add_metric([model, route.active], 1.0)
            if route.rollout is None:
                share.add_metric([model, route.active], 100.0)
            else:
                share.add_metric([model, route.rollout.target], route.rollout.share)
                share.add_metric([model, route.rollout.source], 100.0 - route.rollout.share)
        for loaded in snap.loaded.values():
            memory.add_metric([loaded.model, loaded.version], float(loaded.memory_bytes))
            load.add_metric([loaded.model, loaded.version], loaded.load_seconds)
        yield from (active, share, memory, load)
        stats = self._cache.describe()
        for name in ("hits", "misses", "evictions"):
            yield CounterMetricFamily(f"hotswapd_cache_{name}", f"Embedding cache {name}", value=stats[name])
        yield GaugeMetricFamily("hotswapd_cache_bytes", "Bytes the embedding cache holds", value=stats["bytes"])


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("hotswapd_requests", "Encode requests by outcome", ["model", "version", "outcome"], registry=self.registry)
        self.texts = Counter("hotswapd_texts", "Texts encoded", ["model", "version"], registry=self.registry)
        self.latency = Histogram("hotswapd_inference_seconds", "Inference time of one request", ["model", "version"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_texts = Histogram("hotswapd_batch_texts", "Texts per inference batch", ["model", "version"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram("hotswapd_batch_requests", "Requests merged into one inference batch", ["model", "version"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.switches = Counter("hotswapd_switches", "Switches, rollbacks and rollout steps", ["model", "event", "outcome"], registry=self.registry)
        # The latest periodic benchmark round of each model ([bench]).
        self.bench_speed = Gauge("hotswapd_bench_texts_per_second", "Texts/s in the latest periodic benchmark round", ["model", "version"], registry=self.registry)
        self.bench_agreement = Gauge("hotswapd_bench_agreement", "Mean cosine with the active version in the latest round", ["model", "version"], registry=self.registry)
        self.bench_recommended = Gauge("hotswapd_bench_recommended", "1 for the version the latest round recommends", ["model", "version"], registry=self.registry)
        self._bench_labels: dict[str, set[str]] = {}

    def watch(self, registry: Registry, switchboard: Switchboard, cache: EmbeddingCache) -> None:
        self.registry.register(_LiveState(registry, switchboard, cache))

    def record_batch(self, model: str, version: str, texts: int, requests: int) -> None:
        self.batch_texts.labels(model, version).observe(texts)
        self.batch_requests.labels(model, version).observe(requests)

    def record_request(self, model: str, version: str, outcome: str, seconds: float, texts: int) -> None:
        """``outcome``: ok, error or cancelled."""
        self.requests.labels(model, version, outcome).inc()
        if outcome == "ok":
            self.texts.labels(model, version).inc(texts)
            self.latency.labels(model, version).observe(seconds)

    def record_event(self, event: str, **fields: object) -> None:
        if event in {"switch", "rollback", "abort", "auto_rollback", "rollout_step", "rollout_complete"}:
            self.switches.labels(str(fields.get("model")), event, str(fields.get("outcome", "done"))).inc()

    def record_bench_round(self, rows: list[dict[str, Any]]) -> None:
        """A finished round replaces its models' figures: versions it did not measure go."""
        for model in {row["model"] for row in rows}:
            measured = {row["version"] for row in rows if row["model"] == model}
            for version in self._bench_labels.get(model, set()) - measured:
                for gauge in (self.bench_speed, self.bench_agreement, self.bench_recommended):
                    try:
                        gauge.remove(model, version)
                    except KeyError:
                        pass
            self._bench_labels[model] = measured
        for row in rows:
            labels = (row["model"], row["version"])
            self.bench_speed.labels(*labels).set(row["texts_per_s"])
            self.bench_recommended.labels(*labels).set(1.0 if row.get("recommended") else 0.0)
            if row.get("agreement") is not None:
                self.bench_agreement.labels(*labels).set(row["agreement"])

    def exposition(self) -> str:
        return generate_latest(self.registry).decode()

    def serve(self, port: int) -> None:
        start_http_server(port, addr="127.0.0.1", registry=self.registry)
