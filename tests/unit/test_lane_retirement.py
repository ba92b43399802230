"""Distinct model names must not grow memory or `/metrics` without bound (issue #14, item 8): idle lanes are
retired (keeping what they learned), GCRA state of spent budgets is dropped, and label values past a budget
are counted under "other"."""

from __future__ import annotations

from typing import Any

from aistats_gateway.config import LaneLimits
from aistats_gateway.executor.lanes import Entry, Lane, LaneMemory, retirable
from aistats_gateway.executor.pacing import PRUNE_AT_LEAST, LocalPermits
from aistats_gateway.metrics import OTHER, LabelBudget, Metrics
from aistats_gateway.providers.base import RateLimitInfo


def make_lane(model: str = "m", **limits: Any) -> Lane:
    return Lane(f"p/{model}", "p", model, LaneLimits(**limits), 64, LocalPermits(), burst_seconds=0.0)


def test_only_a_lane_idle_for_long_enough_with_nothing_to_honour_is_retirable() -> None:
    lane = make_lane()
    now = lane.last_active
    assert not retirable(lane, now + 59, 60.0) and retirable(lane, now + 60, 60.0)
    lane.put(object(), "b", b"{}")
    assert not retirable(lane, lane.last_active + 3600, 60.0)  # queued
    lane.drain()
    lane.in_flight = 1
    assert not retirable(lane, lane.last_active + 3600, 60.0)  # on the wire
    lane.finished()  # finishing is activity: the idle clock starts again
    assert not retirable(lane, lane.last_active + 59, 60.0) and retirable(lane, lane.last_active + 60, 60.0)
    lane.pause(7200)  # a Retry-After still to honour outlives the idle time
    assert not retirable(lane, lane.last_active + 3600, 60.0)
    assert retirable(lane, lane.paused_until, 60.0)


def test_lane_memory_restores_learned_limits_and_stays_bounded() -> None:
    memory = LaneMemory(size=3)
    learned = make_lane("known")
    info = RateLimitInfo(500, 499, 0.1, 30000, 29000, 0.1)
    learned.observe(Entry(None, "b"), 200, 0.4, info, 0, 0)
    memory.keep(learned)
    for i in range(10):  # lanes that learned nothing are not remembered
        memory.keep(make_lane(f"nothing-{i}"))
    assert len(memory) == 1
    fresh = make_lane("known")
    memory.restore(fresh)
    assert (fresh.rpm, fresh.tpm, fresh.stats.latency) == (500, 30000, 0.4)
    assert fresh.concurrency() >= int(500 / 60 * 0.4 * 1.5)  # rate x latency from the first request on
    for i in range(10):
        lane = make_lane(f"m{i}")
        lane.learned_rpm = 100 + i
        memory.keep(lane)
    assert len(memory) == 3  # the most recently retired stay
    last = make_lane("m9")
    memory.restore(last)
    assert last.rpm == 109


def test_local_permits_drop_spent_budgets() -> None:
    now = [1000.0]
    permits = LocalPermits(now=lambda: now[0])
    for i in range(20 * PRUNE_AT_LEAST):  # one lane per model name, each used once
        assert permits.take_now(f"p/m{i}", 1, 0, 600, None, 0.0) == 0.0
        now[0] += 0.001
    assert len(permits._tat) <= 2 * PRUNE_AT_LEAST + 1


def test_label_budget_admits_the_first_values_and_counts_the_rest_as_other() -> None:
    budget = LabelBudget(2)
    assert [budget.admit(v) for v in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]


def test_metrics_of_thousands_of_models_stay_bounded() -> None:
    metrics = Metrics(max_model_labels=50)
    lanes = {f"p/m{i}": {"in_flight": 1.0, "limit": 8.0, "queued": 2.0, "rpm": 0.0, "tpm": 0.0,
                         "paused_for": float(i % 7)} for i in range(5000)}
    metrics.watch(lambda: {"in_memory": 0, "sending": 0, "queued": 0, "batches": 1, "lanes": lanes})
    for i in range(5000):
        metrics.child("lines", "p", f"m{i}", "succeeded").inc()
        metrics.child("latency", "p", f"m{i}", "2xx").observe(0.01)
    assert len(metrics._children) <= 2 * 51
    text = metrics.render().decode()
    assert len(text) < 200_000, len(text)
    assert 'aistats_batch_lines_total{model="other",outcome="succeeded",provider="p"} 4950.0' in text
    assert 'aistats_batch_lines_total{model="m49",outcome="succeeded",provider="p"} 1.0' in text
    assert 'aistats_lane_in_flight{lane="other"} 4950.0' in text  # summed past the budget
    assert 'aistats_lane_paused_seconds{lane="other"} 6.0' in text  # the longest pause
    assert "aistats_executor_lanes 5000.0" in text

