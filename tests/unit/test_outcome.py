"""What the executor does after an attempt (executor/outcome.py): settle, retry, fall back, hand back, pause."""

from __future__ import annotations

from aistats_gateway.executor.outcome import (
    AfterAttempt,
    FallBack,
    HandBack,
    Retry,
    Settle,
    Situation,
    after_attempt,
)
from aistats_gateway.executor.retry import RetryPolicy

POLICY = RetryPolicy(max_attempts=3, base=1.0, cap=8.0, max_throttles=2)


def decide(status: int | None, *, attempts: int = 1, throttles: int = 0, final: bool = False,
           retry_after: float | None = None, **situation: bool) -> AfterAttempt:
    return after_attempt(POLICY, status=status, final=final, retry_after=retry_after, attempts=attempts,
                         throttles=throttles, jitter=0.0, situation=Situation(**situation))


def test_an_answer_settles_and_a_definitive_refusal_fails_at_once() -> None:
    assert decide(200) == AfterAttempt(Settle(True))
    assert decide(400) == AfterAttempt(Settle(False))
    assert decide(400, can_fall_back=True) == AfterAttempt(Settle(False))  # the request is wrong, not the provider


def test_transient_failures_retry_with_backoff_until_the_attempts_are_spent() -> None:
    assert decide(503, attempts=1) == AfterAttempt(Retry(0.5))
    assert decide(None, attempts=2) == AfterAttempt(Retry(1.0))
    assert decide(503, attempts=3) == AfterAttempt(Settle(False))


def test_a_spent_provider_falls_back_when_another_candidate_is_allowed() -> None:
    assert decide(503, attempts=3, can_fall_back=True) == AfterAttempt(FallBack())
    assert decide(503, attempts=1, can_fall_back=True) == AfterAttempt(Retry(0.5))  # it still has attempts
    # ... unless its circuit is open: then another provider now beats waiting for this one
    assert decide(None, attempts=1, can_fall_back=True, circuit_open=True) == AfterAttempt(FallBack())
    assert decide(None, attempts=1, circuit_open=True) == AfterAttempt(Retry(0.5))  # nowhere else to go


def test_a_429_pauses_the_lane_and_does_not_fall_back() -> None:
    assert decide(429, throttles=1, retry_after=3.0) == AfterAttempt(Retry(3.0), pause_lane=3.0)
    assert decide(429, throttles=1) == AfterAttempt(Retry(0.5), pause_lane=1.0)
    assert decide(429, throttles=2, can_fall_back=True) == AfterAttempt(Settle(False), pause_lane=1.0)


def test_a_final_429_settles_at_once_without_pausing_the_lane() -> None:
    assert decide(429, throttles=1, final=True, retry_after=60.0) == AfterAttempt(Settle(False))


def test_draining_hands_back_what_would_be_retried_and_settles_the_rest() -> None:
    assert decide(503, attempts=1, draining=True, can_fall_back=True) == AfterAttempt(HandBack())
    assert decide(429, throttles=1, draining=True) == AfterAttempt(HandBack(), pause_lane=1.0)
    assert decide(503, attempts=3, draining=True, can_fall_back=True) == AfterAttempt(Settle(False))
    assert decide(200, draining=True) == AfterAttempt(Settle(True))


def test_a_halted_batch_never_retries_or_falls_back() -> None:
    assert decide(503, attempts=1, halted=True) == AfterAttempt(Settle(False))
    assert decide(503, attempts=3, halted=True, can_fall_back=True) == AfterAttempt(Settle(False))
