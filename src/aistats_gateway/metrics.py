"""Prometheus metrics of one gateway process (`GET /metrics`), on a registry of its own.

Counters and histograms are updated where things happen (a settled line, an upstream answer, a
webhook attempt); gauges that describe current state (lines in memory, requests on the wire, lanes)
are read from the executor at scrape time, so the hot path pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.lines = Counter("aistats_batch_lines_total", "Batch lines settled, by outcome.",
                             ["provider", "model", "outcome"], registry=self.registry)
        self.upstream_latency = Histogram("aistats_upstream_latency_seconds", "Upstream request latency.",
                                          ["provider", "model", "status_class"], buckets=LATENCY_BUCKETS,
                                          registry=self.registry)
        self.throttled = Counter("aistats_upstream_429_total", "Upstream 429 answers (rate limited).",
                                 ["provider", "model"], registry=self.registry)
        self.upstream_failures = Counter("aistats_upstream_unavailable_total",
                                         "Upstream attempts with no usable answer, by kind.",
                                         ["provider", "kind"], registry=self.registry)
        self.webhooks = Counter("aistats_webhook_attempts_total", "Webhook delivery attempts, by outcome.",
                                ["outcome"], registry=self.registry)
        self.batches = Counter("aistats_batches_finished_total", "Batches that reached a terminal status.",
                               ["status"], registry=self.registry)

    def watch(self, read: Callable[[], dict[str, Any]]) -> None:
        """Expose the executor's live state (read at scrape time)."""
        self.registry.register(_StateCollector(read))

    def watch_storage(self, read: Callable[[], dict[str, dict[str, int]]]) -> None:
        """Expose batch and line counts from the database (a snapshot the caller refreshes)."""
        self.registry.register(_StorageCollector(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self.read()
        yield GaugeMetricFamily("aistats_executor_lines_in_memory",
                                "Leased lines not yet settled (queued, on the wire, or waiting to retry).",
                                value=state["in_memory"])
        yield GaugeMetricFamily("aistats_executor_requests_in_flight", "Upstream requests on the wire.",
                                value=state["sending"])
        yield GaugeMetricFamily("aistats_executor_queue_depth", "Lines queued in lanes, waiting for a permit.",
                                value=state["queued"])
        yield GaugeMetricFamily("aistats_executor_batches_active", "Batches this executor is working on.",
                                value=state["batches"])
        busy = GaugeMetricFamily("aistats_lane_in_flight", "Requests in flight per provider lane.", labels=["lane"])
        limit = GaugeMetricFamily("aistats_lane_concurrency_limit", "Concurrency limit per lane.", labels=["lane"])
        paused = GaugeMetricFamily("aistats_lane_paused_seconds", "Seconds a lane stays paused after a 429.",
                                   labels=["lane"])
        queued = GaugeMetricFamily("aistats_lane_queued", "Requests waiting for a permit per lane.", labels=["lane"])
        rate = GaugeMetricFamily("aistats_lane_rate_limit", "Effective per-minute limit per lane (0: unknown).",
                                 labels=["lane", "budget"])
        for name, lane in state["lanes"].items():
            busy.add_metric([name], lane["in_flight"])
            limit.add_metric([name], lane["limit"])
            paused.add_metric([name], lane["paused_for"])
            queued.add_metric([name], lane["queued"])
            rate.add_metric([name, "requests"], lane["rpm"])
            rate.add_metric([name, "tokens"], lane["tpm"])
        yield busy
        yield limit
        yield paused
        yield queued
        yield rate


class _StorageCollector(Collector):
    def __init__(self, read: Callable[[], dict[str, dict[str, int]]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self.read()
        batches = GaugeMetricFamily("aistats_batches", "Batches by status (database snapshot).", labels=["status"])
        for status, n in sorted(counts.get("batches", {}).items()):
            batches.add_metric([status], n)
        yield batches
        lines = GaugeMetricFamily("aistats_unfinished_batch_lines",
                                  "Lines of batches not yet terminal, by state (database snapshot).", labels=["state"])
        for state, n in sorted(counts.get("lines", {}).items()):
            lines.add_metric([state], n)
        yield lines
