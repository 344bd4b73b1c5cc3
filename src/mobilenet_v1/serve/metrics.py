"""The server's Prometheus metrics, named as Triton's are read: requests by endpoint and
status, inferences (images) against executions (model calls: their ratio is the average
batch), batch sizes, time in the queue, in the model and decoding photos, queue depth."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..optional import require

__all__ = ["EXTRA", "Metrics"]

EXTRA = "serve"
SECONDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """One registry per server (never the process-wide default: tests run several)."""

    def __init__(self) -> None:
        prom = require("prometheus_client", EXTRA, "the server's metrics")
        self._prom = prom
        self.registry = registry = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "mobilenet_v1_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=registry
        )
        self.request_seconds = prom.Histogram(
            "mobilenet_v1_request_duration_seconds", "time to answer", ["endpoint"], buckets=SECONDS, registry=registry
        )
        self.inferences = prom.Counter(
            "mobilenet_v1_inference_count", "images run through the model", registry=registry
        )
        self.executions = prom.Counter(
            "mobilenet_v1_execution_count", "calls of the model (batches)", registry=registry
        )
        self.batch_size = prom.Histogram(
            "mobilenet_v1_batch_size", "images per call of the model", buckets=BATCHES, registry=registry
        )
        self.queue_seconds = prom.Histogram(
            "mobilenet_v1_queue_duration_seconds", "time a request waited for its batch", buckets=SECONDS,
            registry=registry,
        )  # fmt: skip
        self.compute_seconds = prom.Histogram(
            "mobilenet_v1_compute_duration_seconds", "time of one call of the model", buckets=SECONDS, registry=registry
        )
        self.decode_seconds = prom.Histogram(
            "mobilenet_v1_decode_duration_seconds", "time to decode and preprocess one photo", buckets=SECONDS,
            registry=registry,
        )  # fmt: skip
        self.queue_depth = prom.Gauge("mobilenet_v1_queue_depth", "requests waiting for a batch", registry=registry)

    def batch(self, size: int, waits: Sequence[float], compute: float) -> None:
        """One call of the model on ``size`` images, after its requests waited ``waits``."""
        self.inferences.inc(size)
        self.executions.inc()
        self.batch_size.observe(size)
        self.compute_seconds.observe(compute)
        for wait in waits:
            self.queue_seconds.observe(wait)

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.request_seconds.labels(endpoint).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The text exposition format, and its content type."""
        prom: Any = self._prom
        return prom.generate_latest(self.registry), prom.CONTENT_TYPE_LATEST
