"""Routing per attempt: which provider and lane a line goes to, and whether it may fall back to another.

The batch's `provider` preferences order the candidate providers of the line's model (providers/routing.py),
recomputed every few seconds (a `sort` by latency or throughput moves); a line goes to the first candidate whose
circuit is closed. A line whose provider keeps failing moves to its next candidate with a fresh attempt budget,
unless the batch set `allow_fallbacks: false`. Each (provider, upstream model) has one lane (lanes.py), created
with its pump on first use, and retired (its pump ending) once idle for `lane_idle_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aistats_gateway.config import LaneLimits
from aistats_gateway.executor.core import ExecutorCore
from aistats_gateway.executor.lanes import Circuit, Lane, retirable
from aistats_gateway.executor.state import BatchState, Work
from aistats_gateway.providers.base import Provider

log = logging.getLogger(__name__)
ROUTE_REFRESH_SECONDS = 5.0  # candidate order is recomputed this often (sort by latency/throughput moves)


class Routing(ExecutorCore):
    """The Executor's routing part (see core.py)."""

    def _candidates(self, state: BatchState, model: str) -> list[Provider]:
        now = time.monotonic()
        cached = state.routes.get(model)
        if cached is not None and now - cached[0] < ROUTE_REFRESH_SECONDS:
            return cached[1]
        found = self.router.candidates(model, state.prefs, rank=self._ranker(state.prefs))
        state.routes[model] = (now, found)
        return found

    def _ranker(self, prefs: dict[str, Any] | None) -> Callable[[Provider, str], float] | None:
        """The key of the batch's `sort` preference (lower first), from prices and lane statistics."""
        sort = (prefs or {}).get("sort")
        if sort == "price":
            def by_price(provider: Provider, model: str) -> float:
                return float(self.pricer.unit_cost(provider.name, self.router.upstream_model(provider, model)))
            return by_price
        if sort == "latency":
            def by_latency(provider: Provider, model: str) -> float:
                lane = self.lanes.get((provider.name, self.router.upstream_model(provider, model)))
                latency = lane.stats.latency if lane is not None else None
                return latency if latency is not None else 0.0  # unmeasured first: it may be the fastest
            return by_latency
        if sort == "throughput":
            def by_throughput(provider: Provider, model: str) -> float:
                lane = self.lanes.get((provider.name, self.router.upstream_model(provider, model)))
                if lane is None:
                    cfg = self.provider_configs.get(provider.name)
                    rpm = cfg.lane_limits(model).rpm if cfg is not None else None
                    return -float(rpm or 1e12)
                return -float(lane.rpm or 1e12) * (0.0 if lane.circuit.is_open() else 1.0)
            return by_throughput
        return None

    def _choose(self, work: Work, state: BatchState) -> Provider | None:
        candidates = self._candidates(state, work.item.model)
        if (state.prefs or {}).get("allow_fallbacks") is False:
            candidates = candidates[:1]
        usable = [p for p in candidates if not work.tried or p.name not in work.tried]
        if not usable:
            return None
        now = time.monotonic()
        for provider in usable:  # the first whose circuit is closed, else the first
            circuit = self.circuits.get(provider.name)
            if circuit is None or not circuit.is_open(now):
                return provider
        return usable[0]

    def _next_candidate(self, work: Work, state: BatchState, provider: Provider) -> Provider | None:
        """The provider `work` would fall back to from `provider`: its next untried candidate, if allowed."""
        if (state.prefs or {}).get("allow_fallbacks") is False:
            return None
        tried = {provider.name, *(work.tried or ())}
        return next((p for p in self._candidates(state, work.item.model) if p.name not in tried), None)

    def _fall_back(self, work: Work, state: BatchState, provider: Provider, to: Provider) -> None:
        """Move `work` from `provider` to its next candidate `to`, with a fresh attempt budget."""
        work.tried = {*(work.tried or ()), provider.name}
        work.attempts = 0
        log.info("line %d of %s falls back from %s to %s", work.item.line, work.item.batch_id, provider.name,
                 to.name, extra={"batch_id": work.item.batch_id})
        self._enqueue(work, state)

    def _lane(self, provider: Provider, upstream_model: str) -> Lane:
        key = (provider.name, upstream_model)
        lane = self.lanes.get(key)
        if lane is None:
            cfg = self.provider_configs.get(provider.name)
            limits = cfg.lane_limits(upstream_model) if cfg is not None else None
            lane = Lane(f"{provider.name}/{upstream_model}", provider.name, upstream_model,
                        limits if limits is not None else LaneLimits(), self.cfg.concurrency, self.permits,
                        headroom=self.cfg.pacing_headroom, burst_seconds=self.cfg.pacing_burst_seconds,
                        hard_cap=self.cfg.max_lane_concurrency,
                        circuit=self.circuits.setdefault(provider.name, Circuit(self.cfg.circuit_cooldown_seconds)))
            self.lane_memory.restore(lane)
            self.lanes[key] = lane
            task = asyncio.create_task(lane.pump(self._launch), name=f"lane-{lane.key}")
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)
        return lane

    def retire_idle_lanes(self) -> int:
        """Drop the lanes idle for `lane_idle_seconds` (lanes.retirable), keeping what they learned; their pumps
        end. A later request for the same pair makes a new lane. Returns how many were retired."""
        now = time.monotonic()
        idle = [key for key, lane in self.lanes.items() if retirable(lane, now, self.cfg.lane_idle_seconds)]
        for key in idle:
            lane = self.lanes.pop(key)
            self.lane_memory.keep(lane)
            lane.close()
        return len(idle)

    def _enqueue(self, work: Work, state: BatchState) -> None:
        provider = self._choose(work, state)
        if provider is None:
            tried = ", ".join(sorted(work.tried or ()))
            if tried:
                self._settle_error(work, "provider_unavailable", f"Every provider for model '{work.item.model}' "
                                   f"failed ({tried}); no other candidate is allowed.")
            else:
                self._settle_error(work, "provider_unavailable",
                                   f"No configured provider serves model '{work.item.model}' any more.")
            return
        lane = self._lane(provider, self.router.upstream_model(provider, work.item.model))
        state.lanes[work.item.model] = lane
        lane.put(work, work.item.batch_id, work.body)
