"""Prometheus metrics, in a registry of their own per server (no process-global state).

Labels are bounded: route templates (never raw paths or run ids), declared job names, states.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

M = TypeVar("M", Counter, Histogram)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)


class Metrics:
    def __init__(self) -> None:
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "runyard_http_requests", "HTTP requests answered", ["method", "route", "status"],
            registry=r,
        )  # fmt: skip
        self.http_duration = Histogram(
            "runyard_http_request_duration_seconds", "HTTP request duration",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.transitions = Counter(
            "runyard_run_transitions", "Run state transitions", ["job", "to"], registry=r
        )
        self.retries = Counter("runyard_run_retries", "Attempts re-queued", ["job"], registry=r)
        self.queued = Gauge("runyard_runs_queued", "Runs waiting", ["job"], registry=r)
        self.running = Gauge("runyard_runs_running", "Runs running", ["job"], registry=r)
        self.queue_wait = Histogram(
            "runyard_run_queue_wait_seconds", "Submitted to first started", ["job"],
            buckets=RUN_BUCKETS, registry=r,
        )  # fmt: skip
        self.run_duration = Histogram(
            "runyard_run_duration_seconds", "Started to finished, per terminal state",
            ["job", "state"], buckets=RUN_BUCKETS, registry=r,
        )  # fmt: skip
        self.watchers = Gauge("runyard_stream_watchers", "Open stream watchers", registry=r)
        self.lagged = Gauge(
            "runyard_stream_lagged", "Watchers dropped for falling behind (since start)",
            registry=r,
        )  # fmt: skip
        self.requests_refused = Counter(
            "runyard_http_requests_refused", "Requests refused at RUNYARD_MAX_REQUESTS",
            registry=r,
        )  # fmt: skip
        self.connections_cut = Counter(
            "runyard_http_connections_cut",
            "Connections refused at RUNYARD_MAX_CONNECTIONS(_PER_CLIENT), or closed idle to "
            "make room for a new one",
            ["why"], registry=r,
        )  # fmt: skip
        self.store_latency = Histogram(
            "runyard_store_operation_seconds", "Store operation latency", ["operation"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip

    def child(self, metric: M, *labels: str) -> M:
        """`metric.labels(*labels)`, looked up once per label set: a handful of these run per
        run, and labels() validates and locks every time. Counters and histograms only: a
        gauge's children are cleared (refresh), which would leave a cached one orphaned."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found
