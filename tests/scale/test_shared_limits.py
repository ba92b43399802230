"""RedisPermitSource on a real Redis: GCRA semantics, and the shared-limit guarantee under contention —
several processes, each with several clients, hammering one lane never get more than
rate × window + burst granted in any window (checked against Redis's own clock at each decision).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterator

import pytest

from aistats_gateway.executor.shared_limits import RedisPermitSource
from tests import backends

pytestmark = pytest.mark.skipif(not backends.redis_available(), reason=backends.REDIS_SKIP)


@pytest.fixture
def prefix() -> Iterator[str]:
    p = backends.redis_prefix()
    yield p
    backends.drop_redis_keys(p)


def source(prefix: str) -> RedisPermitSource:
    import redis.asyncio as aredis

    return RedisPermitSource(aredis.Redis.from_url(backends.REDIS_URL), prefix, ttl_seconds=120)


def test_gcra_semantics_on_one_client(prefix: str) -> None:
    async def body() -> None:
        permits = source(prefix)
        try:
            # rpm 60: T = 1 s; burst 0: one request at a time, the next one a second later
            assert await permits.take("lane", 1, 0, 60, None, 0.0) == 0.0
            wait = await permits.take("lane", 1, 0, 60, None, 0.0)
            assert 0.9 < wait <= 1.0
            # a refused permit charged nothing: asking again at once gives the same wait (minus elapsed time)
            assert 0.8 < await permits.take("lane", 1, 0, 60, None, 0.0) <= wait
            # burst 2 s at 1/s admits 2 at once on a fresh lane (tau / T), then refuses for ~1 s
            assert [await permits.take("burst", 1, 0, 60, None, 2.0) for _ in range(2)] == [0.0, 0.0]
            assert 0.9 < await permits.take("burst", 1, 0, 60, None, 2.0) <= 1.0
            # both budgets must conform: the token budget refuses while requests would pass
            assert await permits.take("tok", 1, 600, 6000, 60_000, 0.05) == 0.0  # 600 tokens at 1000/s
            tok_wait = await permits.take("tok", 1, 600, 6000, 60_000, 0.05)
            assert 0.5 < tok_wait <= 0.6
            # a refund moves the token budget back (never into the past): the next permit conforms at once
            await permits.adjust("tok", -600, 60_000)
            assert await permits.take("tok", 1, 600, 6000, 60_000, 0.05) == 0.0
            # a single cost larger than the burst passes on an idle budget, then the budget is used up
            assert await permits.take("big", 1, 5000, None, 60_000, 0.1) == 0.0
            assert await permits.take("big", 1, 10, None, 60_000, 0.1) > 4.0
            # no limits: always granted, nothing stored
            assert await permits.take("free", 1, 10, None, None, 0.0) == 0.0
            keys = sorted(k.decode() for k in await permits.client.keys(f"{prefix}*"))
            assert f"{prefix}rl:{{free}}:req" not in keys and f"{prefix}rl:{{lane}}:req" in keys
            assert all(0 < ttl <= 120 for ttl in [await permits.client.ttl(k) for k in keys])
        finally:
            await permits.client.aclose()

    asyncio.run(body())


RPM = 6000  # 100 requests/s
BURST = 0.2  # seconds: 20 requests
DURATION = 2.5


def hammer(prefix: str, clients: int, tokens: int, tpm: int | None) -> list[tuple[float, int]]:
    """One process: `clients` concurrent clients asking for permits on one lane; returns (Redis time, tokens)."""

    async def main() -> list[tuple[float, int]]:
        permits = source(prefix)
        grants: list[tuple[float, int]] = []
        loop = asyncio.get_running_loop()
        stop = loop.time() + DURATION

        async def client() -> None:
            while loop.time() < stop:
                granted, wait, now = await permits.take_at("shared", 1, tokens, RPM, tpm, BURST)
                if granted:
                    grants.append((now, tokens))
                else:
                    await asyncio.sleep(min(wait, 0.05))

        await asyncio.gather(*(client() for _ in range(clients)))
        await permits.client.aclose()
        return grants

    return asyncio.run(main())


def max_in_window(grants: list[tuple[float, int]], window: float, weight: bool) -> float:
    times = sorted(grants)
    best, total, start = 0.0, 0.0, 0
    for end in range(len(times)):
        total += times[end][1] if weight else 1
        while times[end][0] - times[start][0] > window:
            total -= times[start][1] if weight else 1
            start += 1
        best = max(best, total)
    return best


@pytest.mark.parametrize("budget", ["requests", "tokens"])
def test_processes_hammering_one_lane_never_exceed_rate_times_window_plus_burst(prefix: str, budget: str) -> None:
    tokens, tpm = (0, None) if budget == "requests" else (50, 60_000)  # tokens: 1000/s → 20 requests/s bind
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        parts = pool.starmap(hammer, [(prefix, 8, tokens, tpm)] * 3)
    grants = [g for part in parts for g in part]
    assert sum(1 for part in parts if part) == 3, "every process got permits"
    if budget == "requests":
        rate, burst, weight = RPM / 60, BURST * RPM / 60, False
    else:
        rate, burst, weight = 60_000 / 60, BURST * 60_000 / 60, True
    for window in (0.25, 0.5, 1.0):
        seen = max_in_window(grants, window, weight)
        unit = 1 if not weight else tokens
        assert seen <= rate * window + burst + unit, f"{seen} granted in {window}s (limit {rate}/s + burst {burst})"
    span = max(t for t, _ in grants) - min(t for t, _ in grants)
    used = sum(n for _, n in grants) if weight else len(grants)
    # and the limit is used, not just respected: at least 80 % of rate × span (+ burst) was granted
    assert used >= 0.8 * rate * span, f"only {used} granted over {span:.2f}s at {rate}/s"
