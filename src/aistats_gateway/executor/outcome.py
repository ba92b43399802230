"""What happens to a line after one attempt at its provider: one pure function returning a value.

`after_attempt` weighs the answer (or its absence) against the retry policy (retry.py) and the executor's
situation — draining for a restart, the batch halted, the provider's circuit, an untried candidate — and
returns what the executor does next:

    Settle(succeeded)   write the line's result now (the answer, or the last failure)
    Retry(delay)        send it again to the same provider after `delay` seconds
    FallBack()          send it to the next candidate provider, with a fresh attempt budget
    HandBack()          draining: leave it unsent; the next start sends it (its lease is released at stop)

with `pause_lane` set when the upstream is pacing us (a 429 that retrying can help): the whole lane waits,
not just this line. The executor (attempts.py) only carries the value out, so every rule here is tested
without an event loop or a network (tests/unit/test_outcome.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from aistats_gateway.executor.retry import RetryPolicy

DEFAULT_PAUSE = 1.0  # how long a lane waits on a 429 that did not say (Retry-After)


@dataclass(frozen=True)
class Settle:
    succeeded: bool


@dataclass(frozen=True)
class Retry:
    delay: float


@dataclass(frozen=True)
class FallBack:
    pass


@dataclass(frozen=True)
class HandBack:
    pass


Next = Settle | Retry | FallBack | HandBack


@dataclass(frozen=True)
class AfterAttempt:
    next: Next
    pause_lane: float | None = None  # seconds the whole lane waits before its next send


@dataclass(frozen=True)
class Situation:
    """The executor's side of the decision, read when the answer came."""

    halted: bool = False  # the batch is being cancelled or expired: nothing is sent again
    draining: bool = False  # the process is stopping: nothing new is sent
    circuit_open: bool = False  # the provider keeps failing: prefer another candidate to waiting for it
    can_fall_back: bool = False  # another candidate is allowed and untried (only asked for transient failures)


def transient(status: int | None) -> bool:
    """No answer or a 5xx: the provider (not the request) failed, so another provider may do better."""
    return status is None or status >= 500


def after_attempt(
    policy: RetryPolicy, *, status: int | None, final: bool, retry_after: float | None, attempts: int,
    throttles: int, jitter: float, situation: Situation,
) -> AfterAttempt:
    """`status` None: no answer at all. `final`: the upstream said retrying cannot help (a quota 429).
    `attempts`/`throttles`: the line's non-429 and 429 attempts at this provider, this one included."""
    if status is not None and 200 <= status < 300:
        return AfterAttempt(Settle(True))
    pause = (retry_after if retry_after is not None else DEFAULT_PAUSE) if status == 429 and not final else None
    retry = None if final else policy.decide(status=status, attempts=attempts, throttles=throttles,
                                             retry_after=retry_after, jitter=jitter)
    retrying = retry is not None and retry.retry
    if retrying and situation.draining:
        return AfterAttempt(HandBack(), pause)
    if (transient(status) and not situation.halted and not situation.draining and situation.can_fall_back
            and (not retrying or situation.circuit_open)):
        return AfterAttempt(FallBack(), pause)
    if retry is not None and retrying and not situation.halted:
        return AfterAttempt(Retry(retry.delay), pause)
    return AfterAttempt(Settle(False), pause)
