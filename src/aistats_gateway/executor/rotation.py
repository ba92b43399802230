"""Who gets the next leases: a rotation of workspaces, and of batches inside each workspace.

The scheduler holds at most a memory target of lines leased (executor/service.py, `_memory_target`). When
room frees up, this module decides which batches lease how many lines. Two promises:

* **Every batch progresses, however many there are.** Shares are at least one line, and the batches served
  in a round move to the back of their workspace's rotation, so with 10,000 batches and room for 8 lines each
  batch still gets its turn. (The earlier rule, `room // number_of_batches`, was 0 for every batch once there
  were more batches than room, and nothing was leased ever again.)
* **Fair across workspaces first.** Room is split between workspaces before batches: a workspace with one
  small batch is served within a round or two of room freeing up, not behind another workspace's thousand.
  Workspaces served in a round move to the back too.

Validations are admitted the same way (`FairQueue`): a thousand batches of one workspace waiting to be
validated do not hold up another workspace's batch.

Pure bookkeeping with no I/O and no event loop: `plan` takes a function that says how many lines a batch may
lease now (0 to pass it over), so unit tests can call it directly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Rotation:
    """The batches this process works on, in serving order per workspace."""

    def __init__(self) -> None:
        self._workspaces: deque[str] = deque()
        self._batches: dict[str, deque[str]] = {}  # workspace -> its batches, next to serve first
        self._owner: dict[str, str] = {}  # batch -> workspace

    def __len__(self) -> int:
        return len(self._owner)

    def __contains__(self, batch_id: object) -> bool:
        return batch_id in self._owner

    def __iter__(self) -> Iterator[str]:
        for workspace in self._workspaces:
            yield from self._batches[workspace]

    def add(self, batch_id: str, workspace_id: str) -> None:
        """A batch joins at the back of its workspace's turn (a new workspace joins at the back of theirs)."""
        if batch_id in self._owner:
            return
        self._owner[batch_id] = workspace_id
        queue = self._batches.get(workspace_id)
        if queue is None:
            queue = self._batches[workspace_id] = deque()
            self._workspaces.append(workspace_id)
        queue.append(batch_id)

    def remove(self, batch_id: str) -> None:
        workspace = self._owner.pop(batch_id, None)
        if workspace is None:
            return
        queue = self._batches[workspace]
        queue.remove(batch_id)
        if not queue:
            del self._batches[workspace]
            self._workspaces.remove(workspace)

    def plan(self, room: int, cap: Callable[[str], int]) -> list[tuple[str, int]]:
        """Lines to lease per batch, in order, for `room` free slots. `cap(batch)` is the most that batch may
        lease now (0: skip it). Each workspace is offered an even part of the room (at least one line), spread
        over its batches (at least one line each, while its part lasts); what a workspace cannot use goes to
        the next. Visited batches and workspaces move to the back of their rotations."""
        plan: list[tuple[str, int]] = []
        if room <= 0 or not self._workspaces:
            return plan
        visited = 0
        for index, workspace in enumerate(list(self._workspaces)):
            if room <= 0:
                break
            visited += 1
            budget = max(1, room // (len(self._workspaces) - index))
            queue = self._batches[workspace]
            # Visit each batch at most once, from the front; a visited batch (served or passed over) goes to the
            # back, so the next round starts where this one stopped: a pointer going round, O(visited) per round.
            for left in range(len(queue), 0, -1):
                if budget <= 0:
                    break
                batch_id = queue.popleft()
                queue.append(batch_id)
                n = min(max(1, budget // left), cap(batch_id))
                if n <= 0:
                    continue
                plan.append((batch_id, n))
                budget -= n
                room -= n
        # Visited workspaces go to the back too; when every one was visited, the order would not change and the
        # first would always get the smallest part of an uneven split, so the turn moves on by one.
        self._workspaces.rotate(-visited if visited < len(self._workspaces) else -1)
        return plan


class FairQueue(Generic[T]):
    """Waiters taken in turn across workspaces, oldest first within one: who runs next when a slot frees up.

    Used to admit validations (executor/service.py): with a thousand batches of one workspace waiting to be
    validated, a later batch of another workspace is the next one admitted, not the thousand-and-first."""

    def __init__(self) -> None:
        self._turn: deque[str] = deque()
        self._waiting: dict[str, deque[T]] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def push(self, workspace_id: str, waiter: T) -> None:
        queue = self._waiting.get(workspace_id)
        if queue is None:
            queue = self._waiting[workspace_id] = deque()
            self._turn.append(workspace_id)
        queue.append(waiter)

    def pop(self) -> T | None:
        """The next waiter: the oldest of the workspace whose turn it is; that workspace goes to the back."""
        if not self._turn:
            return None
        workspace = self._turn.popleft()
        queue = self._waiting[workspace]
        waiter = queue.popleft()
        if queue:
            self._turn.append(workspace)
        else:
            del self._waiting[workspace]
        return waiter

    def discard(self, workspace_id: str, waiter: T) -> None:
        """Forget a waiter that gave up (its task was cancelled)."""
        queue = self._waiting.get(workspace_id)
        if queue is None or waiter not in queue:
            return
        queue.remove(waiter)
        if not queue:
            del self._waiting[workspace_id]
            self._turn.remove(workspace_id)
