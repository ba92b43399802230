"""Permits under requests-per-minute and tokens-per-minute budgets: GCRA, and the token estimate.

GCRA (the generic cell rate algorithm, a.k.a. "theoretical arrival time") keeps one number per
budget: the time TAT at which the budget would be exactly used up if every granted cost had been
spread evenly at the limit. A cost `c` conforms at `now` when `max(TAT, now) + c·T - tau <= now`
(T = 60/limit seconds per unit, tau = the burst tolerance); granting it moves TAT forward by `c·T`.
That is a token bucket without a refill loop, exact at any rate, and one compare per budget.

`PermitSource` is the seam for sharing budgets between processes (the Redis implementation lives
with the scale-out code); `LocalPermits` serves one process. Both check the request and token budgets
together: a permit is granted only when both conform, and then both are charged.

This module never sleeps and never touches the network: lanes (lanes.py) decide when to ask.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from aistats_gateway.pricing.calculator import estimate_input_tokens, output_cap

DEFAULT_OUTPUT_ESTIMATE = 16  # tokens assumed for a request without an output cap (reconciled later)
PRUNE_AT_LEAST = 1024  # budgets LocalPermits holds before it first drops the spent-out ones


class PermitSource(Protocol):
    async def take(self, key: str, cost_requests: int, cost_tokens: int,
                   rpm: int | None, tpm: int | None, burst_seconds: float) -> float:
        """If the permit conforms now, charge it and return 0.0; else charge nothing and return the
        seconds to wait before asking again."""
        ...

    async def adjust(self, key: str, tokens: int, tpm: int | None) -> None:
        """Charge (`tokens` > 0) or refund (< 0) the token budget after the real usage is known."""
        ...


class LocalPermits:
    """GCRA for the budgets of this process (the default; see PermitSource for sharing them)."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._tat: dict[tuple[str, str], float] = {}
        self._prune_at = PRUNE_AT_LEAST

    async def take(self, key: str, cost_requests: int, cost_tokens: int,
                   rpm: int | None, tpm: int | None, burst_seconds: float) -> float:
        return self.take_now(key, cost_requests, cost_tokens, rpm, tpm, burst_seconds)

    async def adjust(self, key: str, tokens: int, tpm: int | None) -> None:
        self.adjust_now(key, tokens, tpm)

    def take_now(self, key: str, cost_requests: int, cost_tokens: int,
                 rpm: int | None, tpm: int | None, burst_seconds: float) -> float:
        now = self._now()
        budgets: list[tuple[tuple[str, str], float]] = []
        wait = 0.0
        for name, limit, cost in (("req", rpm, cost_requests), ("tok", tpm, cost_tokens)):
            if not limit or cost <= 0:
                continue
            interval = 60.0 / limit
            # A single cost larger than the burst could never conform: let it through on an empty budget.
            tau = max(burst_seconds, cost * interval)
            slot = (key, name)
            tat = max(self._tat.get(slot, now), now)
            new_tat = tat + cost * interval
            wait = max(wait, new_tat - tau - now)
            budgets.append((slot, new_tat))
        if wait > 0:
            return wait
        for slot, new_tat in budgets:
            self._tat[slot] = new_tat
        if len(self._tat) > self._prune_at:
            self._prune(now)
        return 0.0

    def _prune(self, now: float) -> None:
        """Drop the budgets whose TAT has passed: such a budget is as good as new (every use reads max(TAT, now)),
        so lanes that come and go (any model name, see lanes.retirable) leave nothing behind. Pruning when the
        map has doubled since the last time keeps it amortized O(1) per permit."""
        self._tat = {slot: tat for slot, tat in self._tat.items() if tat > now}
        self._prune_at = max(PRUNE_AT_LEAST, 2 * len(self._tat))

    def adjust_now(self, key: str, tokens: int, tpm: int | None) -> None:
        if not tpm or tokens == 0:
            return
        slot = (key, "tok")
        now = self._now()
        tat = self._tat.get(slot, now)
        # A refund never moves TAT into the past (that would grant a burst beyond the tolerance).
        self._tat[slot] = max(now, tat + tokens * 60.0 / tpm) if tokens < 0 else max(tat, now) + tokens * 60.0 / tpm


class TokenEstimate:
    """The token cost of one request as the upstream will count it against its TPM budget.

    Providers count the prompt plus the requested output cap at admission (OpenAI documents this), so
    the estimate is `prompt + cap`. The prompt is first measured conservatively from the JSON size
    (pricing's estimator), then scaled by a ratio learned from the answers' real `usage`, so a lane
    converges on the upstream's own count after a few answers.
    """

    __slots__ = ("cap", "explicit_cap", "prompt_raw")

    def __init__(self, prompt_raw: int, cap: int, explicit_cap: bool) -> None:
        self.prompt_raw = prompt_raw
        self.cap = cap
        self.explicit_cap = explicit_cap

    @classmethod
    def of(cls, body: bytes) -> TokenEstimate:
        try:
            parsed: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            return cls(len(body) // 4 + 1, DEFAULT_OUTPUT_ESTIMATE, False)
        if not isinstance(parsed, dict):
            return cls(len(body) // 4 + 1, DEFAULT_OUTPUT_ESTIMATE, False)
        cap = output_cap(parsed, 0)
        return cls(estimate_input_tokens(parsed), cap or DEFAULT_OUTPUT_ESTIMATE, cap > 0)


class PromptRatio:
    """Learned ratio of real prompt tokens to the raw estimate (an EWMA; starts at 1 = conservative)."""

    def __init__(self, weight: float = 0.1) -> None:
        self.value = 1.0
        self.samples = 0
        self._weight = weight

    def observe(self, raw: int, actual: int) -> None:
        if raw <= 0 or actual <= 0:
            return
        ratio = actual / raw
        self.samples += 1
        weight = max(self._weight, 1.0 / self.samples)  # the first answers count fully
        self.value += weight * (ratio - self.value)

    def scale(self, raw: int) -> int:
        return max(1, int(raw * self.value + 0.999))
