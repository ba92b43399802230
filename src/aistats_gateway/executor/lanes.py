"""Lanes: per-provider admission — a concurrency cap and a pause after the upstream says wait.

The first cut of pacing: a lane bounds in-flight requests to one provider and, when the provider
answers 429 with Retry-After, holds every request to it until that moment instead of letting each
item discover the limit on its own. RPM/TPM buckets and AIMD build on this (issue: executor at
full speed).
"""

from __future__ import annotations

import asyncio
import time


class Lane:
    def __init__(self, name: str, max_concurrency: int) -> None:
        self.name = name
        self.limit = max_concurrency
        self.in_flight = 0
        self._slots = asyncio.Semaphore(max_concurrency)
        self.paused_until = 0.0

    def state(self) -> dict[str, float]:
        return {"in_flight": self.in_flight, "limit": self.limit,
                "paused_for": max(0.0, self.paused_until - time.monotonic())}

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)

    async def acquire(self) -> None:
        """Wait out any pause, then take a slot (plain calls: this runs once per attempt)."""
        while (wait := self.paused_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        await self._slots.acquire()
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._slots.release()
