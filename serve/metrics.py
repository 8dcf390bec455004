"""Prometheus metrics for semore-serve.

Each server owns its own CollectorRegistry, so tests (and a process embedding two servers) never
collide on metric names in the global registry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# Sub-millisecond resolution: the interesting latencies here are 0.1-10 ms.
LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class _ReadCounter(Collector):
    """A counter kept elsewhere, read when /metrics is scraped."""

    def __init__(self, name: str, documentation: str, read: Callable[[], int]) -> None:
        self._name, self._documentation, self._read = name, documentation, read

    def collect(self):
        yield CounterMetricFamily(self._name, self._documentation, value=self._read())


class ServerMetrics:
    """The metrics the servicer and batcher update; cheap enough to touch on every frame."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "semore_requests_total",
            "Requests handled: one per GetSpec/Act call and one per StreamAct observation.",
            ["method"],
            registry=r,
        )
        self.errors = Counter(
            "semore_errors_total",
            "Requests that ended in an error, by gRPC status code.",
            ["method", "code"],
            registry=r,
        )
        self.refused_frames = Counter(
            "semore_refused_frames_total",
            "Frames refused before they reached the policy, by reason (serve.decode.RefusalReason).",
            ["reason"],
            registry=r,
        )
        self.streams_opened = Counter(
            "semore_streams_opened_total", "StreamAct streams accepted.", registry=r
        )
        self.active_streams = Gauge("semore_active_streams", "StreamAct streams open now.", registry=r)
        self.batch_size = Histogram(
            "semore_batch_size", "Requests per model call.", buckets=BATCH_BUCKETS, registry=r
        )
        self.inference_seconds = Histogram(
            "semore_inference_seconds",
            "Wall time of one (batched) model call.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_seconds = Histogram(
            "semore_request_seconds",
            "Server time per request (decode, queueing, inference), by method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ready = Gauge("semore_ready", "1 while the server reports SERVING.", registry=r)
        self.nonfinite_actions = Counter(
            "semore_nonfinite_actions_total",
            "Requests refused because the policy produced NaN or inf (also in semore_errors_total).",
            ["method"],
            registry=r,
        )
        # Children resolved once: a labelled lookup per frame costs more than the observation.
        self.stream_requests = self.requests.labels("StreamAct")
        self.stream_seconds = self.request_seconds.labels("StreamAct")
        self._http = None

    def on_batch(self, batch_size: int, seconds: float) -> None:
        self.batch_size.observe(batch_size)
        self.inference_seconds.observe(seconds)

    def error(self, method: str, code: str) -> None:
        self.errors.labels(method, code).inc()

    def refused(self, reason: str) -> None:
        self.refused_frames.labels(reason).inc()

    def count_clamped(self, read: Callable[[], int]) -> None:
        """Exposes semore_clamped_actions_total, read at each scrape from the count the policy keeps
        (OnnxPolicy.clamped_actions), so the clamping and its count stay in one place."""
        self.registry.register(
            _ReadCounter(
                "semore_clamped_actions",
                "Actions that had a value outside the spec's bounds, clamped to them before they were sent.",
                read,
            )
        )

    def serve_http(self, port: int, host: str) -> int:
        """Exposes /metrics on host:port (port 0 picks a free one); returns the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        bound = server.server_address[1]
        log.info(
            "metrics on http://%s:%d/metrics",
            host,
            bound,
            extra={"event": "metrics_listening", "port": bound},
        )
        return bound

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
