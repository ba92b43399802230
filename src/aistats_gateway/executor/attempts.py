"""Attempts: sending one line to its lane's provider, recording what came back, and carrying out what follows.

A lane's pump launches one send task per line it lets through (lanes.py). The attempt goes on the wire,
the lane learns from the answer (pacing, the provider's circuit), the metrics and the request log get their
record, and then `outcome.after_attempt` — a pure function — says what happens next: settle, retry after a
delay, fall back to the next candidate, hand back because the process is draining; with a lane pause when the
upstream is pacing us. This module only carries that value out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aistats_gateway import ids
from aistats_gateway.domain.jsonl import error_line, success_line, upstream_error_line
from aistats_gateway.domain.request_log import RequestLogRow
from aistats_gateway.errors import UpstreamUnavailable
from aistats_gateway.executor.core import ExecutorCore
from aistats_gateway.executor.lanes import Entry, Lane
from aistats_gateway.executor.outcome import AfterAttempt, FallBack, HandBack, Retry, Situation, after_attempt
from aistats_gateway.executor.outcome import transient as is_transient
from aistats_gateway.executor.state import BatchState, Work
from aistats_gateway.pricing.calculator import PricingRow, usage_details
from aistats_gateway.providers.base import Provider, ProviderResult, with_model
from aistats_gateway.storage.store import Settlement

log = logging.getLogger(__name__)


class Attempts(ExecutorCore):
    """The Executor's sending part (see core.py)."""

    def _launch(self, work: Work, entry: Entry) -> None:
        task = asyncio.create_task(self._send(work, entry))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, work: Work, entry: Entry) -> None:
        lane = entry.lane
        assert lane is not None
        state = self.batches.get(work.item.batch_id)
        if state is None or state.halt is not None or self._draining:
            lane.finished()
            self._drop(work)
            return
        if lane.circuit.is_open():
            # Queued before the provider's circuit opened: go to a healthy candidate instead, if any.
            other = self._choose(work, state)
            if other is not None and other.name != lane.provider:
                lane.finished()
                self._enqueue(work, state)
                return
        try:
            await self._attempt(work, state, lane, entry)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not lose the item
            log.exception("unexpected error on %s line %d", work.item.batch_id, work.item.line,
                          extra={"batch_id": work.item.batch_id})
            self._settle_error(work, "internal_error", "The gateway hit an internal error on this request.")

    async def _attempt(self, work: Work, state: BatchState, lane: Lane, entry: Entry) -> None:
        item = work.item
        provider = self.router.by_name[lane.provider]
        body = work.body if lane.model == item.model else with_model(work.body, lane.model)
        result: ProviderResult | None = None
        failure: UpstreamUnavailable | None = None
        request_id = ids.gateway_request_id()
        started = time.monotonic()
        self._sending += 1
        try:
            result = await provider.send(work.endpoint, lane.model, body)
        except UpstreamUnavailable as exc:
            failure = exc
        finally:
            lane.finished()
            self._sending -= 1
            if self._sending == 0:
                self._idle.set()
        self.failpoints.hit("after_upstream")
        latency = time.monotonic() - started
        status = result.status if result is not None else None
        self._observe(work, lane, entry, provider, result, failure, latency)
        usage_rows: list[PricingRow] = []
        cost: int | None = None
        if result is not None and 200 <= result.status < 300:
            usage_rows, cost = self.pricer.usage_rows(provider.name, item.model, work.endpoint, result.usage)
        self.log_buffer.append(RequestLogRow(
            request_id, state.workspace_id, item.batch_id, state.session_id, item.custom_id, item.line,
            work.attempts + work.throttles, provider.name, item.model, status,
            None if failure is None else f"upstream_{failure.kind}", int(latency * 1000),
            result.input_tokens if result is not None else 0, result.output_tokens if result is not None else 0,
            cost, self.clock.now()))
        fallback = self._next_candidate(work, state, provider) if is_transient(status) else None
        after = after_attempt(
            self.policy, status=status, final=result is not None and result.final,
            retry_after=result.retry_after if result is not None else None, attempts=work.attempts,
            throttles=work.throttles, jitter=self._rng.random(),
            situation=Situation(halted=state.halt is not None, draining=self._draining,
                                circuit_open=lane.circuit.is_open(), can_fall_back=fallback is not None))
        self._carry_out(after, work, state, lane, provider, fallback, result, failure, request_id, usage_rows)

    def _observe(self, work: Work, lane: Lane, entry: Entry, provider: Provider,
                 result: ProviderResult | None, failure: UpstreamUnavailable | None, latency: float) -> None:
        """What the lane, the circuit, the metrics and the line's counters learn from one attempt."""
        status = result.status if result is not None else None
        lane.observe(entry, status, latency, result.limits if result is not None else None,
                     result.input_tokens if result is not None else 0,
                     result.output_tokens if result is not None else 0)
        lane.circuit.record(not is_transient(status))
        if failure is not None:
            self._metric("failure", provider.name, failure.kind).inc()
        else:
            self._metric("latency", provider.name, work.item.model, f"{status // 100}xx" if status else "none"
                         ).observe(latency)
            if status == 429:
                self._metric("throttled", provider.name, work.item.model).inc()
        if status == 429:
            work.throttles += 1
        else:
            work.attempts += 1

    def _carry_out(self, after: AfterAttempt, work: Work, state: BatchState, lane: Lane,
                   provider: Provider, fallback: Provider | None, result: ProviderResult | None,
                   failure: UpstreamUnavailable | None, request_id: str, usage_rows: list[PricingRow]) -> None:
        item = work.item
        if after.pause_lane is not None:  # the upstream is pacing us: hold the whole lane (no attempt is burnt)
            lane.pause(after.pause_lane)
        step = after.next
        if isinstance(step, HandBack):
            self._drop(work)  # it will be sent after the restart
        elif isinstance(step, FallBack):
            assert fallback is not None
            self._fall_back(work, state, provider, fallback)
        elif isinstance(step, Retry):
            self._retry_later(work, state, step.delay)
        elif step.succeeded:
            assert result is not None
            line = success_line(ids.batch_request_id(), item.custom_id, result.status, request_id, result.body,
                                provider.name)
            self._metric("lines", provider.name, item.model, "succeeded").inc()
            cached, reasoning = usage_details(work.endpoint, result.usage)
            self._settle(Settlement(item.batch_id, item.line, True, line, work.attempts,
                                    result.input_tokens, result.output_tokens, tuple(usage_rows), cached, reasoning))
        else:
            self._metric("lines", provider.name, item.model, "failed").inc()
            if result is not None:
                line = upstream_error_line(ids.batch_request_id(), item.custom_id, result.status, request_id,
                                           result.body, provider.name)
                self._settle(Settlement(item.batch_id, item.line, False, line, work.attempts))
            else:
                assert failure is not None
                self._settle_error(work, f"upstream_{failure.kind}",
                                   f"{failure.message} (after {work.attempts} attempt(s))")

    def _retry_later(self, work: Work, state: BatchState, delay: float) -> None:
        """Queue `work` again after `delay` (a halt or a stop cancels the timer and accounts for the line)."""
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def requeue() -> None:
            state.timers.discard(handle)
            self._enqueue(work, state)

        handle = loop.call_later(delay, requeue)
        state.timers.add(handle)

    def _settle_error(self, work: Work, code: str, message: str) -> None:
        line = error_line(ids.batch_request_id(), work.item.custom_id, code, message)
        self._settle(Settlement(work.item.batch_id, work.item.line, False, line, work.attempts))

    def _metric(self, kind: str, *labels: str) -> Any:
        return self.metrics.child(kind, *labels)
