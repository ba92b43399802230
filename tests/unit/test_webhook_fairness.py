"""Fair shares of the webhook delivery slots (issue 14, item 9): a workspace's slow target cannot take every
slot, free slots go to workspaces in turn, and a target that keeps timing out rests."""

from __future__ import annotations

from aistats_gateway.domain.urlguard import target_key
from aistats_gateway.webhooks.fairness import MAX_REST_SECONDS, Candidate, Load, Rests, pick, rest_seconds

SHARES = {"slots": 8, "per_workspace": 4, "per_target": 2}


def hole(n: int, ws: str = "ws_a", target: str = "blackhole:443") -> list[Candidate]:
    return [Candidate(f"{ws}_{i}", ws, target) for i in range(n)]


def test_a_black_holed_target_gets_at_most_its_share_and_the_others_start_at_once() -> None:
    a = hole(40)
    b = Candidate("b_1", "ws_b", "hooks.b.example:443")
    start, rest = pick([*a, b], Load(), **SHARES, resting=set())
    assert b in start and rest == []
    assert [c.id for c in start if c.workspace_id == "ws_a"] == ["ws_a_0", "ws_a_1"]  # per target


def test_a_busy_workspace_leaves_room_for_the_others() -> None:
    load = Load()
    for c in hole(2, target="t1:443") + hole(2, target="t2:443"):
        load.add(c)
    many_targets = [Candidate(f"a{i}", "ws_a", f"t{i}:443") for i in range(3, 30)]
    start, _ = pick(many_targets, load, **SHARES, resting=set())
    assert start == []  # ws_a already has its 4
    late = Candidate("b_1", "ws_b", "b:443")
    start, _ = pick([*many_targets, late], load, **SHARES, resting=set())
    assert start == [late]


def test_free_slots_go_to_workspaces_in_turn_fewest_in_flight_first() -> None:
    candidates = [Candidate(f"{ws}{i}", ws, f"{ws}{i}:443") for ws in ("x", "y", "z") for i in range(4)]
    load = Load()
    load.add(Candidate("busy", "x", "old:443"))
    start, _ = pick(candidates, load, slots=4, per_workspace=4, per_target=2, resting=set())
    assert sorted(c.workspace_id for c in start) == ["x", "y", "z"]  # x was busy: y and z first, then x
    start, _ = pick(candidates, Load(), slots=8, per_workspace=4, per_target=2, resting=set())
    assert [c.workspace_id for c in start] == ["x", "y", "z"] * 2 + ["x", "y"]


def test_targets_are_shared_per_workspace_so_a_common_receiver_is_not_throttled_by_one_workspace() -> None:
    load = Load()
    for c in hole(2, ws="ws_a", target="hooks.shared.example:443"):
        load.add(c)
    b = Candidate("b_1", "ws_b", "hooks.shared.example:443")
    assert pick([b], load, **SHARES, resting=set())[0] == [b]
    load.remove(hole(1, ws="ws_a", target="hooks.shared.example:443")[0])
    assert load.by_target[("ws_a", "hooks.shared.example:443")] == 1 and load.total == 1


def test_a_resting_targets_due_events_are_postponed_not_started() -> None:
    a = hole(5)
    b = Candidate("b_1", "ws_b", "b:443")
    start, rest = pick([*a, b], Load(), **SHARES, resting={("ws_a", "blackhole:443")})
    assert start == [b] and rest == a


def test_a_target_rests_longer_after_each_consecutive_timeout_and_any_answer_ends_it() -> None:
    assert [rest_seconds(n, 30) for n in (0, 1, 2, 3)] == [0, 30, 60, 120]
    assert rest_seconds(50, 30) == MAX_REST_SECONDS
    rests = Rests(30)
    key = ("ws_a", "blackhole:443")
    rests.record(key, timed_out=True, now=100)
    assert rests.resting(101) == {key: 130}
    rests.record(key, timed_out=True, now=131)
    assert rests.resting(132) == {key: 191}
    assert rests.resting(200) == {}
    rests.record(key, timed_out=False, now=200)
    rests.record(key, timed_out=True, now=300)
    assert rests.resting(301) == {key: 330}  # the streak started again
    assert Rests(0).resting(0) == {}


def test_target_key_is_the_canonical_host_and_port() -> None:
    assert target_key("https://Hooks.Example.com/x") == "hooks.example.com:443"
    assert target_key("https://ｈｏｏｋｓ.example.com:8443/y") == "hooks.example.com:8443"
    assert target_key("http://127.0.0.1:9/h") == "127.0.0.1:9"
    assert target_key("ftp://nope") == "ftp://nope"
