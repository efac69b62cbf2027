"""Prometheus metrics of the HTTP server: requests, latency, batch sizes, errors.

Each app gets its own registry (tests build many apps in one process). With several uvicorn
workers, prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by `emorec serve`)
lets any worker answer /metrics with the sum over all of them.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # In multiprocess mode values live in files; the per-app registry would double-count them.
        reg = None if self.multiprocess else self.registry
        self.requests = Counter("emorec_http_requests_total", "HTTP requests answered", ["route", "method", "status"], registry=reg)
        self.errors = Counter("emorec_http_errors_total", "HTTP requests answered with status >= 400", ["route", "status"], registry=reg)
        self.latency = Histogram("emorec_http_request_duration_seconds", "Time from request to response", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=reg)
        self.batch_size = Histogram("emorec_batch_size_images", "Images per forward pass", buckets=BATCH_BUCKETS, registry=reg)
        self.images = Counter("emorec_images_total", "Images classified", registry=reg)
        self.in_flight = Gauge("emorec_http_requests_in_flight", "Requests being answered", registry=reg,
                               multiprocess_mode="livesum")

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def observe_batch(self, size: int) -> None:
        self.batch_size.observe(size)
        self.images.inc(size)

    def render(self) -> bytes:
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
