"""RetryPolicy: given what happened to an attempt, wait how long — or settle now. Pure.

Retryable: the statuses domain/upstream.py names, timeouts, connection errors and unreadable bodies
(the same set the official OpenAI SDK retries). Everything else (other 4xx) settles at once into
the error file with the upstream's status and body. A 429 does not burn one of the item's
`max_attempts` (the upstream was only pacing us) but is bounded separately by `max_throttles`.
Delays: the upstream's Retry-After when given (plus ≤10 % jitter so a crowd does not return in
lockstep), else exponential backoff `base·2^(n-1)` capped at `cap`, with jitter in [½, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

from aistats_gateway.domain.upstream import retryable_status


@dataclass(frozen=True)
class Decision:
    retry: bool
    delay: float = 0.0
    counts_attempt: bool = True


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    max_throttles: int = 50

    def decide(
        self,
        *,
        status: int | None,
        attempts: int,
        throttles: int,
        retry_after: float | None,
        jitter: float,
    ) -> Decision:
        """`status` None means no answer at all; `attempts` counts non-429 tries made so far
        (this one included); `jitter` is a uniform random number in [0, 1)."""
        if status is not None and not retryable_status(status):
            return Decision(retry=False)
        if status == 429:
            if throttles >= self.max_throttles:
                return Decision(retry=False, counts_attempt=False)
            return Decision(True, self._delay(throttles, retry_after, jitter), counts_attempt=False)
        if attempts >= self.max_attempts:
            return Decision(retry=False)
        return Decision(True, self._delay(attempts, retry_after, jitter))

    def _delay(self, n: int, retry_after: float | None, jitter: float) -> float:
        if retry_after is not None:
            return retry_after * (1.0 + 0.1 * jitter)
        backoff = min(self.cap, self.base * 2.0 ** max(0, n - 1))
        return backoff * (0.5 + 0.5 * jitter)
