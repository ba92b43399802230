"""THE batch state machine: the only code that decides whether a status change is allowed.

Storage persists a transition with compare-and-set on the current status; this module says which
(from, to) pairs exist and which timestamp column each target stamps. Pure.

    validating ──► in_progress ──► finalizing ──► completed
        │               │  │
        │               │  └──► expired          (at expires_at; unfinished lines → batch_expired)
        ▼               ▼
      failed        cancelling ──► cancelled     (unfinished lines → batch_cancelled)
        ▲
    validating ──► cancelling (cancel before validation finished)
    validating ──► expired    (window ran out before validation finished)
"""

from __future__ import annotations

from aistats_gateway.domain.batch import BatchStatus as S

ALLOWED: frozenset[tuple[S, S]] = frozenset(
    {
        (S.VALIDATING, S.IN_PROGRESS),
        (S.VALIDATING, S.FAILED),
        (S.VALIDATING, S.CANCELLING),
        (S.VALIDATING, S.EXPIRED),
        (S.IN_PROGRESS, S.FINALIZING),
        (S.IN_PROGRESS, S.CANCELLING),
        (S.IN_PROGRESS, S.EXPIRED),
        (S.FINALIZING, S.COMPLETED),
        (S.FINALIZING, S.FAILED),
        (S.CANCELLING, S.CANCELLED),
    }
)

# The timestamp column each target status stamps (OpenAI's batch object fields).
STAMPS: dict[S, str] = {
    S.IN_PROGRESS: "in_progress_at",
    S.FINALIZING: "finalizing_at",
    S.COMPLETED: "completed_at",
    S.FAILED: "failed_at",
    S.EXPIRED: "expired_at",
    S.CANCELLING: "cancelling_at",
    S.CANCELLED: "cancelled_at",
}

CANCELLABLE = frozenset({S.VALIDATING, S.IN_PROGRESS})


class IllegalTransition(ValueError):
    """A (from, to) pair the state machine does not have; a programming error, not user input."""


def check(current: S, target: S) -> str:
    """Return the timestamp column `target` stamps; raise if the move is not in the table."""
    if (current, target) not in ALLOWED:
        raise IllegalTransition(f"batch cannot move from {current.value} to {target.value}")
    return STAMPS[target]
