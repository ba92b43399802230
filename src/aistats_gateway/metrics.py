"""Prometheus metrics of one gateway process (`GET /metrics`), on a registry of its own.

Counters and histograms are updated where things happen (a settled line, an upstream answer, a
webhook attempt); gauges that describe current state (lines in memory, requests on the wire, lanes)
are read from the executor at scrape time, so the hot path pays nothing for them.

It also owns the bound on label cardinality. Model names come from users' files (a provider with
`models = ["*"]` serves any name), so each labelled series costs memory for the life of the process and
bytes in every scrape: 5,000 distinct names made `/metrics` 40 MB. The first `max_model_labels` distinct
models (and as many lanes) get their own label value; later ones are counted under "other".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Each labelled model costs ~2.4 KB of every scrape per provider and status class (the latency histogram's 16
# buckets): 100 keeps /metrics near 250 KB however many names come through, and is far above what dashboards chart.
DEFAULT_MODEL_LABELS = 100
OTHER = "other"  # the label value of every model (or lane) past the bound
_MODEL_AT = {"lines": 1, "latency": 1, "throttled": 1}  # where the model is among a family's labels


class LabelBudget:
    """Admission of label values: the first `limit` distinct values are themselves, every later one is OTHER.
    First come, kept for the life of the process (a series, once exported, never changes its name)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._admitted: set[str] = set()

    def admit(self, value: str) -> str:
        if value in self._admitted:
            return value
        if len(self._admitted) < self.limit:
            self._admitted.add(value)
            return value
        return OTHER


class Metrics:
    def __init__(self, max_model_labels: int = DEFAULT_MODEL_LABELS) -> None:
        self.models = LabelBudget(max_model_labels)
        self.lane_labels = LabelBudget(max_model_labels)
        self._children: dict[tuple[str, ...], Any] = {}
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
        self._families: dict[str, Any] = {"failure": self.upstream_failures, "latency": self.upstream_latency,
                                          "throttled": self.throttled, "lines": self.lines}

    def child(self, kind: str, *labels: str) -> Any:
        """The labelled child of an upstream/line family (`kind`: lines, latency, throttled, failure), its model
        label admitted by the budget; looked up once per label set (labels() costs microseconds per call)."""
        at = _MODEL_AT.get(kind)
        if at is not None:
            labels = (*labels[:at], self.models.admit(labels[at]), *labels[at + 1:])
        key = (kind, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = self._families[kind].labels(*labels)
        return found

    def watch(self, read: Callable[[], dict[str, Any]]) -> None:
        """Expose the executor's live state (read at scrape time)."""
        self.registry.register(_StateCollector(read, self.lane_labels))

    def watch_storage(self, read: Callable[[], dict[str, dict[str, int]]]) -> None:
        """Expose batch and line counts from the database (a snapshot the caller refreshes)."""
        self.registry.register(_StorageCollector(read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, read: Callable[[], dict[str, Any]], lane_labels: LabelBudget) -> None:
        self.read = read
        self.lane_labels = lane_labels

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
        yield GaugeMetricFamily("aistats_executor_lanes", "Lanes alive (one per provider and upstream model); "
                                "idle ones are retired.", value=len(state["lanes"]))
        busy = GaugeMetricFamily("aistats_lane_in_flight", "Requests in flight per provider lane.", labels=["lane"])
        limit = GaugeMetricFamily("aistats_lane_concurrency_limit", "Concurrency limit per lane.", labels=["lane"])
        paused = GaugeMetricFamily("aistats_lane_paused_seconds", "Seconds a lane stays paused after a 429.",
                                   labels=["lane"])
        queued = GaugeMetricFamily("aistats_lane_queued", "Requests waiting for a permit per lane.", labels=["lane"])
        rate = GaugeMetricFamily("aistats_lane_rate_limit", "Effective per-minute limit per lane (0: unknown).",
                                 labels=["lane", "budget"])
        for name, row in _by_label(state["lanes"], self.lane_labels).items():
            busy.add_metric([name], row["in_flight"])
            limit.add_metric([name], row["limit"])
            paused.add_metric([name], row["paused_for"])
            queued.add_metric([name], row["queued"])
            rate.add_metric([name, "requests"], row["rpm"])
            rate.add_metric([name, "tokens"], row["tpm"])
        yield busy
        yield limit
        yield paused
        yield queued
        yield rate


def _by_label(lanes: dict[str, dict[str, float]], budget: LabelBudget) -> dict[str, dict[str, float]]:
    """Lanes by label value: the lanes past the budget summed under OTHER (their longest pause kept)."""
    rows: dict[str, dict[str, float]] = {}
    for name, lane in lanes.items():
        label = budget.admit(name)
        row = rows.get(label)
        if row is None:
            rows[label] = dict(lane)
            continue
        for field, value in lane.items():
            row[field] = max(row[field], value) if field == "paused_for" else row[field] + value
    return rows


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
