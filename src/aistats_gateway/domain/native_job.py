"""THE native job state machine: the only code that decides whether a native job's state change is allowed.

A native job is one provider batch of a native batch (executor/native.py runs it; storage/native_jobs.py
persists each change with compare-and-set on the current state, as storage does for the batch machine in
transitions.py). Pure.

    creating ──► running ──► collecting ──► done
        │                        ▲           ▲
        ├────────────────────────┘           │   (the provider refused the create: every held line fails)
        └────────────────────────────────────┘   (nothing to send, or nothing was created and nobody wants it)
"""

from __future__ import annotations

from enum import StrEnum

from aistats_gateway.domain.transitions import IllegalTransition


class NativeJobState(StrEnum):
    CREATING = "creating"  # its input is being built, or its create was sent and not yet answered
    RUNNING = "running"  # the provider batch exists (`native_batch_id`) and has not ended
    COLLECTING = "collecting"  # the provider batch ended: its results are being settled into our items
    DONE = "done"  # every line it held is settled

    @property
    def at_provider(self) -> bool:
        """Its lines are (or may soon be) running at the provider: the batch object shows the provider's counts."""
        return self in (NativeJobState.CREATING, NativeJobState.RUNNING)


S = NativeJobState
ALLOWED: frozenset[tuple[S, S]] = frozenset({
    (S.CREATING, S.RUNNING),
    (S.CREATING, S.COLLECTING),
    (S.CREATING, S.DONE),
    (S.RUNNING, S.COLLECTING),
    (S.COLLECTING, S.DONE),
})


def check(current: NativeJobState, target: NativeJobState) -> None:
    """Raise unless the table has the move (a programming error, not input)."""
    if (current, target) not in ALLOWED:
        raise IllegalTransition(f"native job cannot move from {current.value} to {target.value}")
