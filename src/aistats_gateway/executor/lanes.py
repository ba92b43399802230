"""Lanes: one per (provider, upstream model) — the queue, the pacing and the concurrency of that pair.

A lane owns everything that decides *when* a request to one model of one provider may start:
* its queue, round-robin by batch, so a big batch never starves a small one sharing the lane;
* its budgets: requests and tokens per minute from the configuration or learned from the upstream's
  rate-limit headers (the tighter wins), granted by a `PermitSource` (GCRA; see pacing.py) at
  `headroom` of the limit with a burst of at most `burst_seconds` of rate;
* its concurrency: the configured cap; else additive-increase/multiplicative-decrease (slow start
  doubles per round trip until the first 429 or overload) up to the executor's concurrency — and, once
  a rate limit is known, at least rate x latency (Little's law, x1.5), so slow answers (LLMs take
  seconds) never hold a lane below its rate limit; the budgets, not the window, then bound the rate;
* its pause: after a 429 (Retry-After), or when the headers say a budget is spent, nothing starts
  until the moment the upstream named;
* its retirement: a lane idle for a while (`retirable`) is dropped, so distinct model names (a provider
  with `models = ["*"]` serves any) do not pile up lanes and pump tasks for ever; what it learned of the
  upstream's limits outlives it in a small bounded `LaneMemory`.

One pump task per lane hands out permits; the executor supplies `launch`, which starts the send.
The lane never sends, never retries and never touches storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aistats_gateway.config import LaneLimits
from aistats_gateway.executor.pacing import PermitSource, PromptRatio, TokenEstimate
from aistats_gateway.providers.base import RateLimitInfo

AIMD_START = 8  # initial concurrency when the upstream's limits are unknown
CIRCUIT_THRESHOLD = 5  # consecutive failures that open a provider's circuit
LANE_MEMORY_SIZE = 256  # retired lanes whose learned limits are remembered (the most recently retired)


@dataclass
class LaneStats:
    """What routing by `sort` needs to know about a lane."""

    latency: float | None = None  # EWMA of answer latency, seconds


@dataclass
class Entry:
    """A queued request: the executor's work item plus its token estimate (when the lane counts tokens)."""

    work: Any
    batch_id: str
    estimate: TokenEstimate | None = None
    charged: int = 0  # tokens charged to the budget when the permit was granted
    lane: Lane | None = None


@dataclass
class Circuit:
    """Per provider: opens after CIRCUIT_THRESHOLD consecutive failures, for `cooldown` seconds."""

    cooldown: float = 30.0
    failures: int = 0
    open_until: float = 0.0

    def is_open(self, now: float | None = None) -> bool:
        return self.open_until > (time.monotonic() if now is None else now)

    def record(self, ok: bool) -> None:
        if ok:
            self.failures = 0
            self.open_until = 0.0
            return
        self.failures += 1
        if self.failures >= CIRCUIT_THRESHOLD:
            self.open_until = time.monotonic() + self.cooldown


@dataclass
class Lane:
    key: str  # "<provider>/<upstream model>"
    provider: str
    model: str
    limits: LaneLimits
    default_cap: int
    permits: PermitSource
    headroom: float = 0.985
    burst_seconds: float = 0.5
    hard_cap: int = 1024  # the most a rate-derived window may reach
    learned_rpm: int | None = None
    learned_tpm: int | None = None
    in_flight: int = 0
    paused_until: float = 0.0
    stats: LaneStats = field(default_factory=LaneStats)
    circuit: Circuit = field(default_factory=Circuit)  # the provider's, shared by all its lanes
    ratio: PromptRatio = field(default_factory=PromptRatio)

    def __post_init__(self) -> None:
        self.cap = self.limits.max_concurrency or self.default_cap
        self.aimd = self.limits.max_concurrency is None
        self.window = float(min(self.cap, AIMD_START)) if self.aimd else float(self.cap)
        self.ssthresh = float(self.cap)
        self._last_decrease = 0.0
        self._queues: dict[str, deque[Entry]] = {}
        self._order: deque[str] = deque()
        self.queued = 0
        self._wake = asyncio.Event()
        self._closed = False
        self._tokens_per_request = 0.0  # EWMA of the tokens charged per request (for rate x latency)
        self.last_active = time.monotonic()  # when a request was last queued or finished (see retirable)

    # ------------------------------------------------------------------ limits
    @property
    def rpm(self) -> int | None:
        return _tighter(self.limits.rpm, self.learned_rpm)

    @property
    def tpm(self) -> int | None:
        return _tighter(self.limits.tpm, self.learned_tpm)

    @property
    def saturated(self) -> bool:
        """Holding its share of leased lines already (twice its window): lease no more of its model now."""
        return self.queued + self.in_flight >= 2 * self.concurrency()

    def concurrency(self) -> int:
        window = max(1, int(self.window))
        if not self.aimd or self.stats.latency is None:
            return window
        per_second = self._requests_per_second()
        if per_second is None:
            return window
        return max(window, min(self.hard_cap, int(per_second * self.stats.latency * 1.5) + 1))

    def _requests_per_second(self) -> float | None:
        """The lane's request rate as its budgets allow (tokens converted at the learned size of a request)."""
        rates = []
        if self.rpm:
            rates.append(self.rpm / 60.0)
        if self.tpm and self._tokens_per_request:
            rates.append(self.tpm / 60.0 / self._tokens_per_request)
        return min(rates) if rates else None

    def state(self) -> dict[str, float]:
        return {"in_flight": self.in_flight, "limit": self.concurrency(), "queued": self.queued,
                "rpm": self.rpm or 0, "tpm": self.tpm or 0,
                "paused_for": max(0.0, self.paused_until - time.monotonic())}

    # ------------------------------------------------------------------ queue (round-robin by batch)
    def put(self, work: Any, batch_id: str, body: bytes, front: bool = False) -> None:
        estimate = TokenEstimate.of(body) if self.tpm else None
        queue = self._queues.get(batch_id)
        if queue is None:
            queue = self._queues[batch_id] = deque()
            self._order.append(batch_id)
        entry = Entry(work, batch_id, estimate, lane=self)
        if front:
            queue.appendleft(entry)
        else:
            queue.append(entry)
        self.queued += 1
        self.last_active = time.monotonic()
        self._wake.set()

    def _peek(self) -> Entry:
        return self._queues[self._order[0]][0]

    def _pop(self) -> Entry:
        batch_id = self._order[0]
        queue = self._queues[batch_id]
        entry = queue.popleft()
        self.queued -= 1
        if queue:
            self._order.rotate(-1)
        else:
            del self._queues[batch_id]
            self._order.popleft()
        return entry

    def remove_batch(self, batch_id: str) -> list[Any]:
        """Take every queued request of a batch out (cancel, expiry); the caller forgets them."""
        queue = self._queues.pop(batch_id, None)
        if queue is None:
            return []
        with contextlib.suppress(ValueError):
            self._order.remove(batch_id)
        self.queued -= len(queue)
        return [entry.work for entry in queue]

    def drain(self) -> list[Any]:
        works = [entry.work for queue in self._queues.values() for entry in queue]
        self._queues.clear()
        self._order.clear()
        self.queued = 0
        return works

    # ------------------------------------------------------------------ the pump
    def close(self) -> None:
        self._closed = True
        self._wake.set()

    async def pump(self, launch: Callable[[Any, Entry], None]) -> None:
        """Hand out permits in queue order until closed; `launch` starts the request of an entry."""
        while not self._closed:
            if not self.queued or self.in_flight >= self.concurrency():
                self._wake.clear()
                await self._wake.wait()
                continue
            pause = self.paused_until - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            rpm, tpm = self.rpm, self.tpm
            entry = self._peek()
            if rpm or tpm:
                tokens = 0
                if tpm:
                    if entry.estimate is None:
                        entry.estimate = TokenEstimate.of(_body_of(entry.work))
                    tokens = self._at_most_a_minute(self.ratio.scale(entry.estimate.prompt_raw) + entry.estimate.cap)
                wait = await self.permits.take(self.key, 1, tokens, _paced(rpm, self.headroom),
                                               _paced(tpm, self.headroom), self.burst_seconds)
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                if not self.queued or self._peek() is not entry:
                    continue  # a shared budget answers over the network: a halt may have taken the entry meanwhile
                entry.charged = tokens
                if tokens:
                    self._tokens_per_request += 0.1 * (tokens - self._tokens_per_request) \
                        if self._tokens_per_request else tokens
            self._pop()
            self.in_flight += 1
            launch(entry.work, entry)

    # ------------------------------------------------------------------ feedback from answers
    def finished(self) -> None:
        self.in_flight -= 1
        self.last_active = time.monotonic()
        self._wake.set()

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)
        self._wake.set()

    def observe(self, entry: Entry, status: int | None, latency: float, limits: RateLimitInfo | None,
                prompt_tokens: int, completion_tokens: int) -> None:
        """Learn from one answer (`status` None: no answer at all)."""
        if limits is not None:
            self._learn(limits)
        if status is not None and 200 <= status < 300:
            self.stats.latency = latency if self.stats.latency is None else \
                self.stats.latency + 0.1 * (latency - self.stats.latency)
            if self.aimd and self.window < self.cap:
                self.window += 1.0 if self.window < self.ssthresh else 1.0 / self.window
                self.window = min(self.window, float(self.cap))
            if entry.estimate is not None and prompt_tokens > 0:
                self.ratio.observe(entry.estimate.prompt_raw, prompt_tokens)
                counted = prompt_tokens + (entry.estimate.cap if entry.estimate.explicit_cap else completion_tokens)
                if entry.charged:
                    delta = self._at_most_a_minute(counted) - entry.charged
                    if delta:
                        self._adjust(delta)
        elif status == 429 or status in (503, 529):
            self._decrease()
        elif status is not None and 400 <= status < 500 and entry.charged:
            self._adjust(-entry.charged)  # a request the upstream refused (400 ...) used none of its budget

    def _at_most_a_minute(self, tokens: int) -> int:
        """A request's token charge, capped at one minute of the lane's budget. An upstream refuses a request
        that asks for more than its per-minute limit, and charging, say, a `max_tokens` of 10^12 in full would
        stall the lane (every batch on it, other workspaces' too) for years."""
        minute = _paced(self.tpm, self.headroom)
        return min(tokens, minute) if minute else tokens

    def _adjust(self, delta: int) -> None:
        tpm = _paced(self.tpm, self.headroom)
        task = asyncio.ensure_future(self.permits.adjust(self.key, delta, tpm))
        task.add_done_callback(_ignore_result)

    def _decrease(self) -> None:
        """Multiplicative decrease, at most once per round trip (one burst of 429s is one signal)."""
        now = time.monotonic()
        if now - self._last_decrease < max(0.05, self.stats.latency or 0.0):
            return
        self._last_decrease = now
        if self.aimd:
            self.ssthresh = max(1.0, self.window / 2)
            self.window = self.ssthresh

    def _learn(self, info: RateLimitInfo) -> None:
        if info.limit_requests and info.limit_requests > 0:
            self.learned_rpm = info.limit_requests
        if info.limit_tokens and info.limit_tokens > 0:
            self.learned_tpm = info.limit_tokens
        # A spent budget: wait for the next unit of it, not for the whole window to refill.
        if info.remaining_requests == 0 and info.reset_requests and self.rpm:
            self.pause(min(info.reset_requests, 60.0 / self.rpm))
        if info.remaining_tokens == 0 and info.reset_tokens:
            self.pause(min(info.reset_tokens, 1.0))


def retirable(lane: Lane, now: float, idle_seconds: float) -> bool:
    """Whether a lane may be dropped: nothing queued, nothing in flight, no pause still to honour, and no
    request queued or finished for `idle_seconds`. Such a lane holds only what it learned (kept by
    LaneMemory); a new lane for the same pair starts from that. Requests waiting to be retried are in no
    lane: they find (or make) their lane again when they are queued."""
    return (not lane.queued and not lane.in_flight and lane.paused_until <= now
            and now - lane.last_active >= idle_seconds)


@dataclass(frozen=True)
class Learned:
    """What a retired lane learned from its upstream that a new lane for the same pair should start from."""

    rpm: int | None
    tpm: int | None
    latency: float | None
    prompt_ratio: float
    ratio_samples: int


class LaneMemory:
    """The learned limits of retired lanes, by (provider, upstream model): at most `size` of them, the most
    recently retired first to stay. A lane that learned nothing is not remembered (any model name may come
    and go; only what an upstream told us is worth keeping)."""

    def __init__(self, size: int = LANE_MEMORY_SIZE) -> None:
        self.size = size
        self._learned: OrderedDict[tuple[str, str], Learned] = OrderedDict()

    def __len__(self) -> int:
        return len(self._learned)

    def keep(self, lane: Lane) -> None:
        key = (lane.provider, lane.model)
        if lane.learned_rpm is None and lane.learned_tpm is None:
            self._learned.pop(key, None)
            return
        self._learned[key] = Learned(lane.learned_rpm, lane.learned_tpm, lane.stats.latency, lane.ratio.value,
                                     lane.ratio.samples)
        self._learned.move_to_end(key)
        while len(self._learned) > self.size:
            self._learned.popitem(last=False)

    def restore(self, lane: Lane) -> None:
        learned = self._learned.pop((lane.provider, lane.model), None)
        if learned is None:
            return
        lane.learned_rpm, lane.learned_tpm = learned.rpm, learned.tpm
        lane.stats.latency = learned.latency
        lane.ratio.value, lane.ratio.samples = learned.prompt_ratio, learned.ratio_samples


def _tighter(a: int | None, b: int | None) -> int | None:
    if a and b:
        return min(a, b)
    return a or b


def _paced(limit: int | None, headroom: float) -> int | None:
    return max(1, int(limit * headroom)) if limit else None


def _body_of(work: Any) -> bytes:
    body = work.body
    return body if isinstance(body, bytes) else bytes(body)


def _ignore_result(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()
