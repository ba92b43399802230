"""Pacing: GCRA permits, token estimates, and lanes (queue fairness, AIMD, learning from headers)."""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from aistats_gateway.config import LaneLimits
from aistats_gateway.executor.lanes import AIMD_START, Entry, Lane
from aistats_gateway.executor.pacing import DEFAULT_OUTPUT_ESTIMATE, LocalPermits, PromptRatio, TokenEstimate
from aistats_gateway.providers.base import RateLimitInfo, parse_openai_ratelimit


def aio(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test on a fresh event loop (the suite uses no asyncio plugin)."""
    @functools.wraps(test)
    def runner() -> None:
        asyncio.run(test())
    return runner


class Now:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def drive(permits: LocalPermits, now: Now, seconds: float, step: float, **kw: Any) -> list[float]:
    """A greedy client: asks at every `step` until refused, for `seconds`; returns grant times."""
    grants: list[float] = []
    end = now.t + seconds
    while now.t < end:
        while permits.take_now("k", 1, kw.get("tokens", 0), kw.get("rpm"), kw.get("tpm"), kw["burst"]) == 0.0:
            grants.append(now.t)
        now.t += step
    return grants


def max_in_window(times: list[float], window: float) -> int:
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def test_gcra_request_budget_never_exceeds_rate_plus_burst() -> None:
    now = Now()
    permits = LocalPermits(now)
    grants = drive(permits, now, 60.0, 0.003, rpm=600, burst=0.5)  # 10/s, burst of 5
    assert 600 <= len(grants) <= 606
    assert max_in_window(grants, 1.0) <= 10 + 5 + 1
    # Steady state: one grant per 100 ms at most (after the initial burst).
    steady = grants[10:]
    gaps = [b - a for a, b in itertools.pairwise(steady)]
    assert min(gaps) >= 0.1 - 0.0031


def test_gcra_refusal_says_how_long_and_charges_nothing() -> None:
    now = Now()
    permits = LocalPermits(now)
    assert permits.take_now("k", 1, 0, 60, None, 0.0) == 0.0
    wait = permits.take_now("k", 1, 0, 60, None, 0.0)
    assert wait == pytest.approx(1.0)
    now.t += 0.5
    assert permits.take_now("k", 1, 0, 60, None, 0.0) == pytest.approx(0.5)  # the refusal charged nothing
    now.t += 0.5
    assert permits.take_now("k", 1, 0, 60, None, 0.0) == 0.0


def test_both_budgets_must_conform_and_a_refused_token_budget_does_not_charge_requests() -> None:
    now = Now()
    permits = LocalPermits(now)
    # tpm 6000 = 100 tokens/s; a 100-token request fills it for one second (burst 0).
    assert permits.take_now("k", 1, 100, 6000, 6000, 0.0) == 0.0
    assert permits.take_now("k", 1, 100, 6000, 6000, 0.0) == pytest.approx(1.0)
    now.t += 0.01  # the request budget alone (100/s) would allow one now
    assert permits.take_now("k", 1, 0, 6000, 6000, 0.0) == 0.0  # zero tokens: only requests count
    assert permits.take_now("k", 1, 100, 6000, 6000, 0.0) > 0.9


def test_token_budget_over_a_minute_and_oversized_request() -> None:
    now = Now()
    permits = LocalPermits(now)
    grants = drive(permits, now, 60.0, 0.01, tokens=400, tpm=2_000_000, burst=0.5)
    # 2M tokens/min at 400 a request = 5,000 requests a minute (+ the half-second burst).
    assert 5000 <= len(grants) <= 5000 + 42 + 1
    # A single request larger than the burst still gets through on an empty budget, then waits it out.
    fresh = LocalPermits(now)
    assert fresh.take_now("big", 1, 10_000, None, 6000, 0.5) == 0.0
    assert fresh.take_now("big", 1, 1, None, 6000, 0.5) == pytest.approx(100.0 - 0.5, abs=0.02)


def test_adjust_charges_and_refunds_without_creating_extra_burst() -> None:
    now = Now()
    permits = LocalPermits(now)
    assert permits.take_now("k", 1, 100, None, 6000, 0.0) == 0.0  # TAT = now + 1
    permits.adjust_now("k", 100, 6000)  # the upstream counted 200: TAT = now + 2
    assert permits.take_now("k", 1, 1, None, 6000, 0.0) == pytest.approx(2.0)
    permits.adjust_now("k", -150, 6000)  # refund: TAT = now + 0.5
    assert permits.take_now("k", 1, 1, None, 6000, 0.0) == pytest.approx(0.5)
    permits.adjust_now("k", -10_000, 6000)  # a refund never moves TAT before now
    assert permits.take_now("k", 1, 100, None, 6000, 0.0) == 0.0
    assert permits.take_now("k", 1, 100, None, 6000, 0.0) == pytest.approx(1.0)


def test_token_estimate_reads_caps_and_defaults() -> None:
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "word " * 300}], "max_tokens": 100})
    est = TokenEstimate.of(body)
    assert est.cap == 100 and est.explicit_cap
    assert est.prompt_raw >= 300 * 5 / 2.5  # conservative: 2.5 bytes a token
    bare = TokenEstimate.of(orjson.dumps({"model": "m", "input": "hello"}))
    assert bare.cap == DEFAULT_OUTPUT_ESTIMATE and not bare.explicit_cap
    junk = TokenEstimate.of(b"not json at all")
    assert junk.prompt_raw > 0


def test_prompt_ratio_learns_the_upstream_count() -> None:
    ratio = PromptRatio()
    assert ratio.scale(1000) == 1000
    for _ in range(50):
        ratio.observe(1000, 300)
    assert ratio.scale(1000) == pytest.approx(300, abs=2)
    ratio.observe(0, 10)  # nonsense samples are ignored
    assert ratio.scale(1000) == pytest.approx(300, abs=2)


def make_lane(**limits: Any) -> Lane:
    return Lane("p/m", "p", "m", LaneLimits(**limits), 64, LocalPermits(), burst_seconds=0.0)


def work(batch: str, n: int) -> Any:
    return SimpleNamespace(item=SimpleNamespace(batch_id=batch, body=b'{"model":"m"}'), n=n)


@aio
async def test_lane_is_round_robin_by_batch() -> None:
    lane = make_lane(max_concurrency=1000)
    for i in range(100):
        lane.put(work("big", i), "big", b"{}")
    for i in range(5):
        lane.put(work("small", i), "small", b"{}")
    started: list[str] = []

    def launch(w: Any, entry: Entry) -> None:
        started.append(entry.batch_id)
        if len(started) == 105:
            lane.close()

    await asyncio.wait_for(lane.pump(launch), 5)
    assert Counter(started[:10]) == {"big": 5, "small": 5}
    assert lane.queued == 0 and lane.in_flight == 105


@aio
async def test_lane_respects_its_concurrency_window() -> None:
    lane = make_lane()  # unknown limits: AIMD from AIMD_START
    for i in range(50):
        lane.put(work("b", i), "b", b"{}")
    entries: list[Entry] = []
    task = asyncio.create_task(lane.pump(lambda w, e: entries.append(e)))
    await asyncio.sleep(0.05)
    assert len(entries) == AIMD_START == lane.in_flight
    for entry in entries[:4]:  # four answers: slow start grows the window by one each
        lane.finished()
        lane.observe(entry, 200, 0.01, None, 0, 0)
    await asyncio.sleep(0.05)
    assert lane.concurrency() == AIMD_START + 4
    assert len(entries) == AIMD_START + 8  # 4 replaced + 4 more
    lane.close()
    await asyncio.wait_for(task, 1)


def test_aimd_halves_once_per_round_trip() -> None:
    lane = make_lane()
    entry = Entry(None, "b")
    for _ in range(40):
        lane.observe(entry, 200, 0.2, None, 0, 0)
    grown = lane.concurrency()
    assert grown > AIMD_START
    lane.observe(entry, 429, 0.2, None, 0, 0)
    lane.observe(entry, 429, 0.2, None, 0, 0)  # same burst: no second halving
    assert lane.concurrency() == grown // 2
    configured = make_lane(max_concurrency=10)
    configured.observe(entry, 429, 0.2, None, 0, 0)
    assert configured.concurrency() == 10  # a configured cap is not second-guessed


def test_lane_learns_limits_from_headers_and_the_tighter_wins() -> None:
    headers = {"x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "0",
               "x-ratelimit-reset-requests": "6m0s", "x-ratelimit-limit-tokens": "30000",
               "x-ratelimit-remaining-tokens": "29000", "x-ratelimit-reset-tokens": "2s"}
    info = parse_openai_ratelimit(headers)
    assert info == RateLimitInfo(500, 0, 360.0, 30000, 29000, 2.0)
    lane = make_lane(rpm=10_000)
    lane.observe(Entry(None, "b"), 200, 0.1, info, 0, 0)
    assert lane.rpm == 500 and lane.tpm == 30000
    # Spent request budget: pause for one request's worth (60/500 s), not the whole 6-minute refill.
    assert 0.1 < lane.paused_until - time.monotonic() <= 0.12
    tighter = make_lane(rpm=100)
    tighter.observe(Entry(None, "b"), 200, 0.1, info, 0, 0)
    assert tighter.rpm == 100


@aio
async def test_lane_paces_requests_to_the_limit() -> None:
    lane = Lane("p/m", "p", "m", LaneLimits(rpm=3000, max_concurrency=1000), 64, LocalPermits(),
                headroom=1.0, burst_seconds=0.1)  # 50/s, burst of 5
    for i in range(200):
        lane.put(work("b", i), "b", b"{}")
    times: list[float] = []
    task = asyncio.create_task(lane.pump(lambda w, e: times.append(time.monotonic())))
    await asyncio.sleep(0.5)
    lane.close()
    await asyncio.wait_for(task, 1)
    # However slow this machine is, a correct limiter never grants more than rate x time + burst.
    assert len(times) <= 50 * 0.5 + 5 + 1
    assert max_in_window(times, 0.2) <= 50 * 0.2 + 5 + 1


@aio
async def test_token_reconciliation_adjusts_the_budget() -> None:
    now = Now()
    permits = LocalPermits(now)
    lane = Lane("p/m", "p", "m", LaneLimits(tpm=60_000), 64, permits, headroom=1.0, burst_seconds=0.0)
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50})
    lane.put(work("b", 0), "b", body)
    launched: list[Entry] = []

    def launch(w: Any, entry: Entry) -> None:
        launched.append(entry)
        lane.close()

    await lane.pump(launch)
    entry = launched[0]
    assert entry.estimate is not None and entry.charged == entry.estimate.prompt_raw + 50
    lane.observe(entry, 200, 0.1, None, 100, 20)  # the upstream counted 100 prompt + the cap of 50
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    # 60,000 tpm = 1,000 tokens/s: after the refund the budget is 150 tokens deep = 0.15 s.
    assert permits.take_now("p/m", 1, 1, None, 60_000, 0.0) == pytest.approx(0.15, abs=0.002)
    assert lane.ratio.scale(entry.estimate.prompt_raw) == 100


def test_a_known_rate_keeps_rate_times_latency_in_flight() -> None:
    lane = Lane("p/m", "p", "m", LaneLimits(rpm=6000), 64, LocalPermits(), hard_cap=1000)  # 100 requests/s
    assert lane.concurrency() == AIMD_START  # nothing measured yet
    lane.observe(Entry(None, "b"), 200, 2.0, None, 0, 0)  # answers take 2 s (an LLM)
    # Little's law: 100/s x 2 s = 200 in flight, x1.5 margin; the window alone (64 at most) would cap the
    # lane at 32 requests/s, a third of its limit.
    assert lane.concurrency() == 301
    capped = Lane("p/m", "p", "m", LaneLimits(rpm=6000), 64, LocalPermits(), hard_cap=100)
    capped.observe(Entry(None, "b"), 200, 2.0, None, 0, 0)
    assert capped.concurrency() == 100
    configured = Lane("p/m", "p", "m", LaneLimits(rpm=6000, max_concurrency=20), 64, LocalPermits())
    configured.observe(Entry(None, "b"), 200, 2.0, None, 0, 0)
    assert configured.concurrency() == 20  # a configured cap is the user's word


@aio
async def test_an_absurd_max_tokens_costs_at_most_a_minute_of_budget_and_a_refusal_refunds_it() -> None:
    """One line asking max_tokens=10^12 used to charge the lane 10^12 tokens: every batch on the lane then
    waited ~19 years at 100k tpm. The charge is capped at one minute of budget, and an upstream's 4xx
    refusal (what providers answer to such a request) gives it back."""
    now = Now()
    permits = LocalPermits(now)
    lane = Lane("p/m", "p", "m", LaneLimits(tpm=60_000), 64, permits, headroom=1.0, burst_seconds=0.0)
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**12})
    for i in range(2):
        lane.put(work("b", i), "b", body)
    launched: list[Entry] = []

    def launch(w: Any, entry: Entry) -> None:
        launched.append(entry)
        lane.close()

    await lane.pump(launch)
    first = launched[0]
    assert first.charged == 60_000
    assert permits.take_now("p/m", 1, 1, None, 60_000, 0.0) == pytest.approx(60.0, abs=0.01)
    lane.observe(first, 400, 0.1, None, 0, 0)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert permits.take_now("p/m", 1, 1, None, 60_000, 0.0) == 0.0
    # An upstream that answers it anyway counted at most its own per-minute limit: no charge beyond a minute.
    lane.observe(first, 200, 0.1, None, 10, 5)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert permits.take_now("p/m", 1, 1, None, 60_000, 0.0) <= 60.01
