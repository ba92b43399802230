"""Fair shares of the webhook delivery slots (pure decisions, no I/O): which due events start now, and how
long a target that keeps timing out rests.

Why: with a few global slots and a per-attempt timeout, one workspace pointing many batches at a target
that accepts and never answers (a black hole) used to hold every slot for the whole timeout, wave after
wave, and every other workspace's webhooks waited behind it. Now an event starts only when its workspace
and its target have room: at most `per_target` attempts in flight per (workspace, target host:port) and
`per_workspace` per workspace, and free slots go to workspaces in turn, the one with the fewest in
flight first. A target whose attempt timed out rests (its due events are postponed, without using up an
attempt) for a time that doubles with each consecutive timeout. Targets are counted per workspace so a
receiving service shared by many customers is never throttled, or rested, by one workspace's traffic.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

Key = tuple[str, str]  # (workspace id, target "host:port")
MAX_REST_SECONDS = 600.0


@dataclass(frozen=True)
class Candidate:
    """A due event that could be claimed."""

    id: str
    workspace_id: str
    target: str  # host:port (urlguard.target_key)

    @property
    def key(self) -> Key:
        return (self.workspace_id, self.target)


@dataclass
class Load:
    """Attempts in flight in this process."""

    by_workspace: Counter[str] = field(default_factory=Counter)
    by_target: Counter[Key] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.by_workspace.values())

    def add(self, c: Candidate) -> None:
        self.by_workspace[c.workspace_id] += 1
        self.by_target[c.key] += 1

    def remove(self, c: Candidate) -> None:
        self.by_workspace[c.workspace_id] -= 1
        self.by_target[c.key] -= 1
        if self.by_workspace[c.workspace_id] <= 0:
            del self.by_workspace[c.workspace_id]
        if self.by_target[c.key] <= 0:
            del self.by_target[c.key]


def pick(candidates: list[Candidate], load: Load, *, slots: int, per_workspace: int, per_target: int,
         resting: set[Key]) -> tuple[list[Candidate], list[Candidate]]:
    """(events to start now, events of resting targets to postpone). `candidates` come oldest first.

    Round-robin over workspaces (fewest in flight first, then by their oldest event); within one, its
    oldest event whose target has room."""
    waiting: dict[str, list[Candidate]] = {}
    postpone: list[Candidate] = []
    for cand in candidates:
        (postpone if cand.key in resting else waiting.setdefault(cand.workspace_id, [])).append(cand)
    busy_ws = Counter(load.by_workspace)
    busy_target = Counter(load.by_target)
    total = load.total
    chosen: list[Candidate] = []
    progress = True
    while progress and total < slots:
        progress = False
        for ws in sorted(waiting, key=lambda w: busy_ws[w]):  # stable: ties keep oldest-event order
            if total >= slots:
                break
            if busy_ws[ws] >= per_workspace:
                continue
            queue = waiting[ws]
            nxt = next((c for c in queue if busy_target[c.key] < per_target), None)
            if nxt is None:
                continue
            queue.remove(nxt)
            chosen.append(nxt)
            busy_ws[ws] += 1
            busy_target[nxt.key] += 1
            total += 1
            progress = True
    return chosen, postpone


def rest_seconds(consecutive_timeouts: int, base: float) -> float:
    """How long a target rests after its n-th consecutive timeout: base, doubling, at most 10 minutes."""
    if consecutive_timeouts <= 0 or base <= 0:
        return 0.0
    return float(min(MAX_REST_SECONDS, base * 2 ** min(consecutive_timeouts - 1, 20)))


class Rests:
    """Which targets rest until when, from their attempts' outcomes (any answer ends the rest)."""

    def __init__(self, base_seconds: float) -> None:
        self.base = base_seconds
        self._timeouts: dict[Key, int] = {}
        self._until: dict[Key, float] = {}

    def record(self, key: Key, *, timed_out: bool, now: float) -> None:
        if not timed_out:
            self._timeouts.pop(key, None)
            self._until.pop(key, None)
            return
        n = self._timeouts.get(key, 0) + 1
        self._timeouts[key] = n
        self._until[key] = now + rest_seconds(n, self.base)

    def resting(self, now: float) -> dict[Key, float]:
        """Targets resting at `now`, with the time their rest ends. A streak long over is forgotten."""
        for key in [k for k, t in self._until.items() if t < now - MAX_REST_SECONDS]:
            del self._until[key]
            self._timeouts.pop(key, None)
        return {k: t for k, t in self._until.items() if t > now}
