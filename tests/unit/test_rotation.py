"""The lease rotation (executor/rotation.py): every batch progresses however many there are, and room is shared
across workspaces before batches."""

from __future__ import annotations

from collections import Counter

from aistats_gateway.executor.rotation import FairQueue, Rotation


def _rotation(spec: dict[str, int]) -> Rotation:
    rot = Rotation()
    for workspace, n in spec.items():
        for i in range(n):
            rot.add(f"{workspace}-{i}", workspace)
    return rot


def test_more_batches_than_room_still_lease_at_least_one_line() -> None:
    rot = _rotation({"a": 300})
    plan = rot.plan(8, lambda _b: 64)
    assert plan and sum(n for _, n in plan) == 8
    assert all(n >= 1 for _, n in plan)


def test_every_batch_is_served_within_a_rotation() -> None:
    rot = _rotation({"a": 500, "b": 400, "c": 100})
    seen: Counter[str] = Counter()
    for _ in range(200):  # 200 rounds of 8 slots: 1,600 shares for 1,000 batches
        for batch_id, n in rot.plan(8, lambda _b: 64):
            seen[batch_id] += n
    assert len(seen) == 1000


def test_room_is_split_across_workspaces_first() -> None:
    rot = _rotation({"big": 1000, "small": 1})
    plan = rot.plan(64, lambda _b: 64)
    per_workspace = Counter(batch_id.split("-")[0] for batch_id, _ in plan)
    lines = Counter()
    for batch_id, n in plan:
        lines[batch_id.split("-")[0]] += n
    assert lines["small"] == 32 and lines["big"] == 32
    assert per_workspace["big"] == 32  # one line each to 32 of the thousand


def test_a_late_workspace_is_served_within_a_few_rounds_of_one_slot() -> None:
    rot = _rotation({"a": 300, "b": 300, "c": 300})
    for _ in range(5):
        rot.plan(1, lambda _b: 64)
    rot.add("late-0", "late")
    rounds = 0
    while True:
        rounds += 1
        if any(batch_id == "late-0" for batch_id, _ in rot.plan(1, lambda _b: 64)):
            break
        assert rounds < 10
    assert rounds <= 4


def test_what_a_workspace_cannot_use_goes_to_the_next() -> None:
    rot = _rotation({"a": 1, "b": 2})
    caps = {"a-0": 3, "b-0": 100, "b-1": 100}
    plan = dict(rot.plan(100, lambda b: caps[b]))
    assert plan["a-0"] == 3
    assert plan["b-0"] + plan["b-1"] == 97


def test_batches_that_may_not_lease_are_passed_over_and_removal_works() -> None:
    rot = _rotation({"a": 3})
    assert rot.plan(10, lambda b: 0 if b != "a-2" else 5) == [("a-2", 5)]
    rot.remove("a-2")
    rot.remove("a-2")  # twice is harmless
    assert "a-2" not in rot and len(rot) == 2
    rot.remove("a-0")
    rot.remove("a-1")
    assert len(rot) == 0 and rot.plan(10, lambda _b: 5) == []
    assert rot.plan(0, lambda _b: 5) == []


def test_validations_are_admitted_in_turn_across_workspaces() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(1000):
        queue.push("big", f"big-{i}")
    queue.push("late", "late-0")
    assert len(queue) == 1001
    assert [queue.pop(), queue.pop(), queue.pop()] == ["big-0", "late-0", "big-1"]
    queue.discard("big", "big-2")
    queue.discard("big", "nope")
    queue.discard("gone", "x")
    assert queue.pop() == "big-3"
    while queue.pop() is not None:
        pass
    assert len(queue) == 0
